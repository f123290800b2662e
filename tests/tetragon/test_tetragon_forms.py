"""One Tetragon event, in any form protobuf's JSON mapping allows, is one piece of evidence.

Tetragon's export writes proto field names, 64-bit integers as strings, enums by name, times
in UTC with 0, 3, 6 or 9 fractional digits, defaults left out (Go's protojson with
`UseProtoNames`, pkg/encoder/encoder.go; a space after some commas, its `detrand`). A protobuf
JSON reader (its own `tetra getevents` reading a file, `json_format.Parse`) takes more, all the
same message: lowerCamelCase names, 32-bit integers as strings and 64-bit ones as numbers,
integral numbers written as 12.0, enums by number, explicit defaults and nulls, times with an
offset or any number of fractional digits. Every variant made here is first checked to be the
same message to `json_format.Parse`; then the bridge must make the same chain of it, read from
a file in-process, by mapping workers, or sent as the gRPC stream."""

from __future__ import annotations

import datetime as dt
import json
import random
import tempfile
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tetragon_support import (
    APP,
    LIBSSL,
    TetragonProto,
    exec_event,
    exit_event,
    kprobe,
    shop_map,
    to_line,
    tracepoint,
    uprobe,
    usdt,
)

from stella_bundle.attest.keys import load_signer
from stella_bundle.evidence.config import WriterConfig
from stella_bundle.evidence.reader import iter_chain_records
from stella_bundle.evidence.seal import parse_seal
from stella_bundle.functionmap.load import load_function_map
from stella_bundle.tetragon import parallel
from stella_bundle.tetragon.events import EventMapper
from stella_bundle.tetragon.grpc_source import grpc_events
from stella_bundle.tetragon.ingest import TetragonIngest, TetragonIngestResult
from stella_bundle.tetragon.nodes import NodeIndex
from stella_bundle.tetragon.privacy import PrivacyFilter, PrivacyPolicy
from tests.conftest import scaled_examples

POLICY = {"allow_arguments": ["fd", "len", "sock", "cmd", "url"], "keep_stack_traces": True}


def events(pb: TetragonProto, rng: random.Random, count: int) -> list[Any]:
    """`count` events of every kind the bridge records or counts, their values drawn: pids,
    threads, exit statuses (0 too), pods or none, arguments of every integer width and an enum,
    stack offsets, aggregation counts, nanoseconds with trailing zeros or none."""
    made = []
    for index in range(count):
        minute, second = divmod(index * 7919 % 3600, 60)
        fraction = rng.choice([0, 500_000_000, 123_000_000, 123_456_000, 123_456_789])
        time = f"2026-01-23T00:{minute:02d}:{second:02d}.{fraction:09d}Z"
        pod = rng.random() < 0.7
        common: dict[str, Any] = {
            "time": time,
            "pid": rng.choice([0, 1, 4242, 2**31 + 5]),
            "container_id": ("containerd://" + "ab" * 32) if pod else None,
        }
        kind = index % 8
        if kind == 0:
            message = uprobe(pb, LIBSSL, rng.choice(["SSL_write", "SSL_read"]), **common)
        elif kind == 1:
            args = [
                pb.tetragon.KprobeArgument(label="fd", int_arg=rng.choice([0, -1, 7])),
                pb.tetragon.KprobeArgument(label="len", size_arg=rng.choice([0, 2**40 + 1])),
                pb.tetragon.KprobeArgument(label="cmd", bpf_cmd_arg=rng.choice([0, 5])),
                pb.tetragon.KprobeArgument(label="secret", string_arg="hunter2"),
            ]
            sock = pb.tetragon.KprobeArgument(label="sock")
            sock.sock_arg.family = "AF_INET"
            sock.sock_arg.sport = rng.choice([0, 443])
            sock.sock_arg.cookie = 2**63 + 11
            args.append(sock)
            frame = pb.tetragon.StackTraceEntry(
                address=0xFFFF_FFFF_8100_0000, offset=rng.choice([0, 0x1F]), symbol="tcp_connect"
            )
            message = kprobe(pb, "tcp_connect", args=args, stack=[frame], **common)
        elif kind == 2:
            message = tracepoint(pb, "syscalls", "sys_enter_openat", **common)
        elif kind == 3:
            message = usdt(pb, APP, "shop", "order_placed", **common)
        elif kind == 4:
            message = exec_event(pb, binary=APP, arguments="-v --token abc", **common)
        elif kind == 5:
            message = exit_event(pb, binary=APP, **common)
            message.process_exit.status = rng.choice([0, 9])
        elif kind == 6:
            message = uprobe(pb, APP, "checkout", **common)
            message.aggregation_info.count = rng.choice([1, 3, 2**53 - 1])
        else:
            message = pb.events.GetEventsResponse(node_name="node-1")
            message.time.FromJsonString(time)
            message.rate_limit_info.number_of_dropped_process_events = rng.choice([1, 2**40])
        if rng.random() < 0.5 and kind != 7:
            body = getattr(message, message.WhichOneof("event"))
            body.process.tid.value = rng.choice([0, 77])
        made.append(message)
    return made


# --- the forms --------------------------------------------------------------------------------


def _time(text: str, rng: random.Random) -> str:
    """The same instant in another form: an offset, and 0 to 9 fractional digits."""
    moment = dt.datetime.fromisoformat(text[:19] + "+00:00")
    fraction = text[20:-1] if len(text) > 20 else ""
    fraction = fraction.ljust(9, "0").rstrip("0")
    fraction = fraction.ljust(rng.randint(len(fraction), 9), "0")
    minutes = rng.choice([0, 0, 60, -330, 14 * 60, -12 * 60])
    local = moment.astimezone(dt.timezone(dt.timedelta(minutes=minutes)))
    zone = "Z" if not minutes and rng.random() < 0.5 else local.strftime("%z")
    zone = zone if zone == "Z" else f"{zone[:3]}:{zone[3:]}"
    return local.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + zone


_INT32 = {"int32", "sint32", "sfixed32", "uint32", "fixed32"}
_INT64 = {"int64", "sint64", "sfixed64", "uint64", "fixed64"}
_TYPE_NAMES = {
    getattr(FieldDescriptor, name): name[5:].lower()
    for name in dir(FieldDescriptor)
    if name.startswith("TYPE_")
}


def _integer(value: Any, rng: random.Random) -> Any:
    number = int(value)
    forms: list[Any] = [number, str(number)]
    if abs(number) <= 2**53:
        forms.append(float(number))
    return rng.choice(forms)


def _rewrite(value: Any, descriptor: Any, rng: random.Random) -> Any:
    """A MessageToDict document rewritten field by field (the message's own descriptor): names
    of the other form here and there, integers, times, key order, nulls."""
    fields = {**descriptor.fields_by_name, **{f.json_name: f for f in descriptor.fields}}
    out: dict[str, Any] = {}
    items = list(value.items())
    rng.shuffle(items)  # key order is no part of a message
    for key, item in items:
        field = fields[key]
        if rng.random() < 0.2:  # a name of the other form (a reader takes both, mixed)
            key = field.json_name if key == field.name else field.name
        out[key] = (
            [_field(element, field, rng) for element in item]
            if field.is_repeated and not _is_map(field)
            else _field(item, field, rng)
        )
    for field in descriptor.fields:  # a message field left out, written as null
        written = field.name in out or field.json_name in out
        single = field.message_type is not None and not field.is_repeated
        if single and not written and field.containing_oneof is None and rng.random() < 0.2:
            out[rng.choice([field.name, field.json_name])] = None
    return out


def _is_map(field: Any) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _field(item: Any, field: Any, rng: random.Random) -> Any:
    kind = _TYPE_NAMES[field.type]
    if kind in _INT32 | _INT64:
        return _integer(item, rng)
    if kind != "message" or _is_map(field):
        return item
    name = field.message_type.full_name
    if name == "google.protobuf.Timestamp":
        return _time(item, rng)
    if name in ("google.protobuf.UInt32Value", "google.protobuf.Int32Value"):
        return _integer(item, rng)
    if name.startswith("google.protobuf."):
        return item
    return _rewrite(item, field.message_type, rng)


def variant(message: Any, rng: random.Random) -> bytes:
    """One export line of `message` in a form drawn from those protobuf's JSON reader takes;
    checked to be `message` to json_format.Parse."""
    document = json_format.MessageToDict(
        message,
        preserving_proto_field_name=rng.random() < 0.5,
        use_integers_for_enums=rng.random() < 0.5,
        always_print_fields_with_no_presence=rng.random() < 0.5,
    )
    document = _rewrite(document, message.DESCRIPTOR, rng)
    separators = rng.choice([(",", ":"), (", ", ":"), (",", ": ")])
    line = json.dumps(document, separators=separators)
    assert json_format.Parse(line, type(message)()) == message, line
    return line.encode() + b"\n"


# --- ingest ------------------------------------------------------------------------------------


def _runner(target: Path, keys: Any, fm_path: Path) -> TetragonIngest:
    loaded = load_function_map(fm_path, None)
    mapper = EventMapper(
        NodeIndex(loaded.function_map),
        PrivacyFilter(PrivacyPolicy.from_section(POLICY, None)),
    )
    return TetragonIngest(
        target,
        "tetragon-forms",
        load_signer(keys.private("collector")),
        mapper,
        config=WriterConfig(max_records=300),
        source_name="tetragon.log",
    )


def from_file(
    path: Path, target: Path, keys: Any, fm_path: Path, *, workers: bool = False
) -> TetragonIngestResult:
    runner = _runner(target, keys, fm_path)
    parallel.feed_files(runner, [path], 4 * 1024 * 1024, parallel=workers, workers=2)
    return runner.close()


def _seals(result: TetragonIngestResult) -> list[dict[str, Any]]:
    paths = sorted(result.chain_dir.glob("*.seal.dsse.json"))
    return [parse_seal(path.read_bytes(), path).predicate.to_dict() for path in paths]


def chain(result: TetragonIngestResult, *, loss: bool = True) -> list[Any]:
    """The chain's records and what each seal says beyond its time and link (and loss)."""
    contents: list[Any] = list(iter_chain_records(result.chain_dir))
    for predicate in _seals(result):
        del predicate["sealed_at"], predicate["previous"]
        if not loss:
            del predicate["loss"]
        contents.append(predicate)
    return contents


def losses(result: TetragonIngestResult) -> Counter[str]:
    """The chain's loss counters summed over its seals."""
    total: Counter[str] = Counter()
    for predicate in _seals(result):
        for name, value in predicate["loss"].items():
            if name == "by_reason":
                total.update(value)
            else:
                total[name] += value
    return total


def summary(result: TetragonIngestResult) -> dict[str, Any]:
    fields = result.to_dict()
    del fields["chain_dir"]
    fields["problems"] = [p.split(":", 1)[1] for p in fields["problems"]]  # without the source
    return fields


@settings(
    max_examples=scaled_examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(0, 2**32 - 1))
def test_every_form_of_an_event_is_the_same_evidence(
    seed: int, tetragon_pb: TetragonProto, test_keys: Any
) -> None:
    rng = random.Random(seed)
    messages = events(tetragon_pb, rng, 24)
    with tempfile.TemporaryDirectory() as name:
        base = Path(name)
        fm_path = base / "fm.json"
        shop_map(fm_path)
        written = base / "written.log"
        written.write_bytes(b"".join(to_line(m) for m in messages))
        other = base / "other.log"
        other.write_bytes(b"".join(variant(m, rng) for m in messages))
        expected = from_file(written, base / "a", test_keys, fm_path)
        found = from_file(other, base / "b", test_keys, fm_path)
        assert expected.records == 21, summary(expected)  # 3 rate_limit_info
        assert summary(found) == summary(expected)
        assert chain(found) == chain(expected)
        # Both forms in one input: one event each (its identity is read in Tetragon's form).
        both = base / "both.log"
        both.write_bytes(written.read_bytes() + other.read_bytes())
        once = from_file(both, base / "c", test_keys, fm_path)
        assert list(iter_chain_records(once.chain_dir)) == list(
            iter_chain_records(expected.chain_dir)
        )
        duplicates = sum(v for k, v in once.dropped.items() if k.endswith(":duplicate"))
        assert once.records == 21 and duplicates == 21, once.dropped


@pytest.fixture
def stream(tetragon_pb: TetragonProto, tmp_path: Path) -> Iterator[tuple[str, list[Any]]]:
    """A gRPC server of Tetragon's API sending the messages put in the list."""
    pb = tetragon_pb
    sent: list[Any] = []

    class Sensors(pb.sensors_grpc.FineGuidanceSensorsServicer):  # type: ignore[name-defined,misc]
        def GetEvents(self, request: Any, context: Any) -> Iterator[Any]:
            yield from sent

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb.sensors_grpc.add_FineGuidanceSensorsServicer_to_server(Sensors(), server)
    address = f"unix://{tmp_path / 'tetragon.sock'}"
    assert server.add_insecure_port(address) != 0
    server.start()
    try:
        yield address, sent
    finally:
        server.stop(grace=None)


def test_file_workers_and_grpc_stream_of_mixed_forms_make_one_chain(
    tetragon_pb: TetragonProto,
    test_keys: Any,
    tmp_path: Path,
    stream: tuple[str, list[Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An export whose every line has a form of its own (as after a shipper, a merge of
    sources): in-process and by mapping workers, the chain the gRPC stream of the same
    messages makes, record for record and seal for seal."""
    rng = random.Random(20261203)
    messages = events(tetragon_pb, rng, 4000)
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    mixed = tmp_path / "mixed.log"
    mixed.write_bytes(
        b"".join(variant(m, rng) if rng.random() < 0.8 else to_line(m) for m in messages)
    )
    monkeypatch.setattr(parallel, "BLOCK_BYTES", 100_000)
    alone = from_file(mixed, tmp_path / "one", test_keys, fm_path)
    split = from_file(mixed, tmp_path / "two", test_keys, fm_path, workers=True)
    address, sent = stream
    sent.extend(messages)
    runner = _runner(tmp_path / "three", test_keys, fm_path)
    runner.feed_events(grpc_events(address), "tetragon.log")
    streamed = runner.close()
    assert alone.records == 3500 and alone.upstream_dropped > 0
    assert len(parallel._blocks([mixed])) > 10
    assert summary(split) == summary(alone) == summary(streamed)
    assert chain(split) == chain(alone)
    # The stream moves redaction counts into the open chunk every 1000 events (it may run for
    # days), a file at its end: the same sums, in other seals.
    assert chain(streamed, loss=False) == chain(alone, loss=False)
    assert losses(streamed) == losses(alone)
