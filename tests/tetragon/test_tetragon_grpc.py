"""`stella tetragon ingest --grpc`: against a real grpcio server built from Tetragon's proto
(`FineGuidanceSensors.GetEvents`), over a unix socket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from tetragon_support import (
    APP,
    PROTO_ROOT,
    TetragonProto,
    exec_event,
    kprobe,
    shop_map,
    uprobe,
)

from stella_bundle.evidence.reader import iter_chain_records


@pytest.fixture
def tetragon_server(tetragon_pb: TetragonProto, tmp_path: Path) -> Iterator[Any]:
    pb = tetragon_pb
    sent: list[Any] = [
        exec_event(pb, binary=APP),
        uprobe(pb, APP, "checkout"),
        kprobe(pb, "tcp_connect"),
        pb.events.GetEventsResponse(node_name="node-1"),  # an empty event: counted
    ]
    requests: list[Any] = []

    class Sensors(pb.sensors_grpc.FineGuidanceSensorsServicer):  # type: ignore[name-defined,misc]
        def GetEvents(self, request: Any, context: Any) -> Iterator[Any]:
            requests.append(request)
            yield from sent

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb.sensors_grpc.add_FineGuidanceSensorsServicer_to_server(Sensors(), server)
    socket_path = tmp_path / "tetragon.sock"
    address = f"unix://{socket_path}"
    assert server.add_insecure_port(address) != 0
    server.start()
    try:
        yield address, sent, requests
    finally:
        server.stop(grace=None)


def test_ingest_from_grpc_stream(
    tetragon_server: Any, tmp_path: Path, test_keys: Any, run_cli: Any
) -> None:
    address, _, requests = tetragon_server
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    evidence = tmp_path / "evidence"
    result = run_cli(
        "tetragon", "ingest", "--grpc", address, "--function-map", fm_path, "--target",
        evidence, "--key", test_keys.private("collector"), "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert len(requests) == 1
    assert summary["records"] == 3
    assert summary["dropped"] == {"line:no_event": 1}
    (chain,) = [p for p in evidence.iterdir() if p.is_dir()]
    records = list(iter_chain_records(chain))
    assert [r["function_name"] for r in records] == ["execve", "checkout", "tcp_connect"]
    assert {r["container_id"] for r in records} == {"ab" * 32}
    assert records[1]["observed_at"] == "2026-01-23T00:10:00.123456Z"


def test_max_events_stops_the_stream(
    tetragon_server: Any, tmp_path: Path, test_keys: Any, run_cli: Any
) -> None:
    address, _, _ = tetragon_server
    result = run_cli(
        "tetragon", "ingest", "--grpc", address, "--max-events", "2", "--target",
        tmp_path / "e", "--key", test_keys.private("collector"), "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["lines"] == 2


def test_no_server_is_a_clear_error(tmp_path: Path, test_keys: Any, run_cli: Any) -> None:
    from stella_bundle.tetragon import grpc_source

    result_events = grpc_source.grpc_events(
        f"unix://{tmp_path / 'absent.sock'}", timeout_seconds=0.5
    )
    from stella_bundle.errors import InputError

    with pytest.raises(InputError, match="no Tetragon gRPC server"):
        next(iter(result_events))


def test_shipped_descriptor_set_is_the_proto(tmp_path: Path) -> None:
    """tetragon-api.binpb is exactly what protoc makes of tests/data/external/tetragon."""
    from grpc_tools import protoc

    import stella_bundle.tetragon

    out = tmp_path / "fresh.binpb"
    include = str(Path(protoc.__file__).parent / "_proto")
    code = protoc.main(
        [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--descriptor_set_out={out}",
            "--include_imports",
            str(PROTO_ROOT / "tetragon" / "sensors.proto"),
        ]
    )
    assert code == 0
    shipped = Path(stella_bundle.tetragon.__file__).parent / "tetragon-api.binpb"
    fresh_set = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    shipped_set = descriptor_pb2.FileDescriptorSet.FromString(shipped.read_bytes())
    assert {f.name: f for f in fresh_set.file} == {f.name: f for f in shipped_set.file}


def test_a_message_that_is_no_event_is_named_and_the_stream_read_on(
    tetragon_pb: TetragonProto, tmp_path: Path, test_keys: Any, run_cli: Any
) -> None:
    """A message protobuf cannot decode (a string field that is not UTF-8, which Tetragon's
    own Go encoder never sends; bytes cut short) is refused by its number in the stream and
    counted; the messages around it are recorded (grpc's own decoding ended the whole stream
    at it: 'Exception deserializing response!')."""
    pb = tetragon_pb
    good = [exec_event(pb, binary=APP), uprobe(pb, APP, "checkout"), kprobe(pb, "tcp_connect")]
    bad_utf8 = exec_event(pb, binary="/opt/shop/bin/XX").SerializeToString()
    bad_utf8 = bad_utf8.replace(b"/opt/shop/bin/XX", b"/opt/shop/bin/\xff\xfe")
    cut = good[1].SerializeToString()[:-7]
    sent = [good[0].SerializeToString(), bad_utf8, cut, good[1].SerializeToString()]
    sent.append(good[2].SerializeToString())

    def get_events(request: Any, context: Any) -> Iterator[bytes]:
        yield from sent

    handler = grpc.method_handlers_generic_handler(
        "tetragon.FineGuidanceSensors",
        {
            "GetEvents": grpc.unary_stream_rpc_method_handler(
                get_events,
                request_deserializer=pb.events.GetEventsRequest.FromString,
                response_serializer=lambda data: data,  # the bytes as they are
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    address = f"unix://{tmp_path / 'raw.sock'}"
    assert server.add_insecure_port(address) != 0
    server.start()
    try:
        fm_path = tmp_path / "fm.json"
        shop_map(fm_path)
        result = run_cli(
            "tetragon", "ingest", "--grpc", address, "--function-map", fm_path, "--target",
            tmp_path / "evidence", "--key", test_keys.private("collector"), "--format", "json",
        )  # fmt: skip
    finally:
        server.stop(grace=None)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["lines"] == 5 and summary["records"] == 3
    assert summary["dropped"] == {"message:undecodable": 2}
    assert summary["problems"] == [
        f"{address}:2: message:undecodable",
        f"{address}:3: message:undecodable",
    ]
    (chain,) = [p for p in (tmp_path / "evidence").iterdir() if p.is_dir()]
    records = list(iter_chain_records(chain))
    assert [r["function_name"] for r in records] == ["execve", "checkout", "tcp_connect"]
