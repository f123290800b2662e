"""Events from a Tetragon agent's gRPC server (`FineGuidanceSensors.GetEvents`), as the same
dicts its JSON export holds (protobuf JSON mapping, proto field names).

The messages come from Tetragon's own API definitions, shipped as a descriptor set
(`tetragon-api.binpb`, see `tetragon-api.NOTICE.md`) and loaded into a private descriptor pool,
so no generated code is imported and another copy of the same protos cannot clash.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from importlib import resources
from typing import Any, Final, NamedTuple

from ..errors import InputError

GET_EVENTS_METHOD: Final = "/tetragon.FineGuidanceSensors/GetEvents"
_DESCRIPTOR_SET: Final = "tetragon-api.binpb"


@functools.cache
def message_classes() -> tuple[Any, Any]:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    data = resources.files(__package__).joinpath(_DESCRIPTOR_SET).read_bytes()
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        pool.Add(file)
    request = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tetragon.GetEventsRequest")
    )
    response = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tetragon.GetEventsResponse")
    )
    return request, response


class Undecodable(NamedTuple):
    """A message of the stream that is no `GetEventsResponse` (protobuf's reason): refused by
    its number, the stream read on (one bad message does not end a stream of good ones)."""

    reason: str


def grpc_events(
    address: str,
    *,
    max_events: int | None = None,
    stop: threading.Event | None = None,
    timeout_seconds: float = 10.0,
) -> Iterator[dict[str, Any] | Undecodable]:
    """Stream events from `address` (`unix:///var/run/tetragon/tetragon.sock`, `host:port`)
    until the server ends the stream, `max_events` arrived, or `stop` is set."""
    import grpc
    from google.protobuf.json_format import MessageToDict
    from google.protobuf.message import DecodeError

    request_class, response_class = message_classes()
    channel = grpc.insecure_channel(address)
    try:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout_seconds)
        except grpc.FutureTimeoutError as exc:
            raise InputError(
                f"no Tetragon gRPC server answered within {timeout_seconds:g} s", field="--grpc"
            ) from exc
        # Messages are decoded here, not by grpc (whose failure ends the whole stream as
        # "Exception deserializing response!"): a bad one is named by its number.
        get_events = channel.unary_stream(
            GET_EVENTS_METHOD, request_serializer=request_class.SerializeToString
        )
        decode = response_class.FromString
        call = get_events(request_class())
        if stop is not None:
            watcher = threading.Thread(target=lambda: (stop.wait(), call.cancel()), daemon=True)
            watcher.start()
        received = 0
        try:
            for data in call:
                try:
                    message = decode(data)
                except DecodeError as exc:
                    yield Undecodable(str(exc))
                else:
                    yield MessageToDict(message, preserving_proto_field_name=True)
                received += 1
                if max_events is not None and received >= max_events:
                    call.cancel()
                    return
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise InputError(
                f"Tetragon gRPC stream failed: {exc.code().name}: {exc.details()}",
                field="--grpc",
            ) from exc
    finally:
        channel.close()
