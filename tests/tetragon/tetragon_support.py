"""Tetragon events built from Tetragon's own proto (compiled here with grpcio-tools) and
serialised as its JSON export does: protobuf JSON mapping, proto field names, one
`GetEventsResponse` per line, 64-bit integers as strings."""

from __future__ import annotations

import base64
import importlib
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from google.protobuf import json_format

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "tests" / "data" / "external"
CRD = PROTO_ROOT / "tetragon" / "cilium.io_tracingpolicies.yaml"


@dataclass(frozen=True)
class TetragonProto:
    events: ModuleType  # events_pb2
    tetragon: ModuleType  # tetragon_pb2
    sensors_grpc: ModuleType  # sensors_pb2_grpc
    out_dir: Path


def compile_proto(out_dir: Path) -> TetragonProto:
    """protoc (grpcio-tools) over tests/data/external/tetragon/*.proto into `out_dir`."""
    from grpc_tools import protoc

    protos = sorted(str(p) for p in (PROTO_ROOT / "tetragon").glob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    code = protoc.main(
        [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *protos,
        ]
    )
    assert code == 0, f"protoc failed with {code}"
    # A regular package, so that `tetragon` is never taken for the tests/tetragon folder.
    (out_dir / "tetragon" / "__init__.py").write_text("")
    # The generated modules import each other as `tetragon.X_pb2`.
    sys.path.insert(0, str(out_dir))
    try:
        events = importlib.import_module("tetragon.events_pb2")
        tetragon = importlib.import_module("tetragon.tetragon_pb2")
        sensors_grpc = importlib.import_module("tetragon.sensors_pb2_grpc")
    finally:
        sys.path.remove(str(out_dir))
    return TetragonProto(events, tetragon, sensors_grpc, out_dir)


def to_line(message: Any) -> bytes:
    """One export line, as Tetragon writes it."""
    document = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return json.dumps(document, separators=(",", ":")).encode() + b"\n"


# Each process built here is another exec (Tetragon's exec_id names one across the cluster and
# over time): two events built alike are two firings, not one event read twice (the bridge
# drops those). A test that repeats one line's bytes repeats one event.
_EXECS = itertools.count(1)


def process(
    pb: TetragonProto,
    *,
    binary: str = "/usr/bin/curl",
    arguments: str = "",
    pid: int = 4242,
    container_id: str | None = "containerd://" + "ab" * 32,
    pod: str = "web-7d9f",
    namespace: str = "shop",
    image_id: str = "docker.io/library/web@sha256:" + "cd" * 32,
) -> Any:
    proc = pb.tetragon.Process(
        exec_id=base64.b64encode(f"node1:{next(_EXECS)}:{pid}".encode()).decode(),
        binary=binary,
        arguments=arguments,
        flags="execve clone",
        docker=(container_id or "").partition("://")[2][:31],
    )
    proc.pid.value = pid
    proc.uid.value = 0
    proc.start_time.FromJsonString("2026-01-23T00:00:00.123456789Z")
    if container_id is not None:
        proc.pod.namespace = namespace
        proc.pod.name = pod
        proc.pod.container.id = container_id
        proc.pod.container.name = "web"
        proc.pod.container.image.id = image_id
        proc.pod.container.image.name = "docker.io/library/web:1.0"
    return proc


def response(
    pb: TetragonProto, *, time: str = "2026-01-23T00:10:00.123456789Z", node: str = "node-1"
) -> Any:
    message = pb.events.GetEventsResponse(node_name=node)
    message.time.FromJsonString(time)
    return message


def uprobe(pb: TetragonProto, path: str, symbol: str, **kwargs: Any) -> Any:
    time = kwargs.pop("time", "2026-01-23T00:10:00.123456789Z")
    args = kwargs.pop("args", [])
    message = response(pb, time=time)
    message.process_uprobe.process.CopyFrom(process(pb, **kwargs))
    message.process_uprobe.path = path
    message.process_uprobe.symbol = symbol
    message.process_uprobe.policy_name = "stella-svc"
    message.process_uprobe.offset = 0x1234
    message.process_uprobe.args.extend(args)
    return message


def kprobe(pb: TetragonProto, function: str, **kwargs: Any) -> Any:
    time = kwargs.pop("time", "2026-01-23T00:10:01.5Z")
    stack = kwargs.pop("stack", [])
    user_stack = kwargs.pop("user_stack", [])
    args = kwargs.pop("args", [])
    message = response(pb, time=time)
    event = message.process_kprobe
    event.process.CopyFrom(process(pb, **kwargs))
    event.function_name = function
    event.action = pb.tetragon.KPROBE_ACTION_POST
    event.policy_name = "stella-svc"
    event.args.extend(args)
    event.kernel_stack_trace.extend(stack)
    event.user_stack_trace.extend(user_stack)
    return message


def tracepoint(pb: TetragonProto, subsystem: str, name: str, **kwargs: Any) -> Any:
    message = response(pb, time=kwargs.pop("time", "2026-01-23T00:10:02Z"))
    message.process_tracepoint.process.CopyFrom(process(pb, **kwargs))
    message.process_tracepoint.subsys = subsystem
    message.process_tracepoint.event = name
    return message


def usdt(pb: TetragonProto, path: str, provider: str, name: str, **kwargs: Any) -> Any:
    message = response(pb, time=kwargs.pop("time", "2026-01-23T00:10:03.000001Z"))
    message.process_usdt.process.CopyFrom(process(pb, **kwargs))
    message.process_usdt.path = path
    message.process_usdt.provider = provider
    message.process_usdt.name = name
    return message


def exec_event(pb: TetragonProto, **kwargs: Any) -> Any:
    message = response(pb, time=kwargs.pop("time", "2026-01-23T00:09:59Z"))
    message.process_exec.process.CopyFrom(process(pb, **kwargs))
    return message


def exit_event(pb: TetragonProto, **kwargs: Any) -> Any:
    message = response(pb, time=kwargs.pop("time", "2026-01-23T00:10:04Z"))
    message.process_exit.process.CopyFrom(process(pb, **kwargs))
    message.process_exit.signal = "SIGKILL"
    return message


def firings(line: bytes, count: int) -> list[bytes]:
    """`count` copies of an export line, each another firing of the probe (its own exec_id, as
    another process's), so that the bridge does not take them for one event read twice."""
    event = json.loads(line)
    kind = next(key for key in event if key not in ("node_name", "time"))
    exec_id = event[kind]["process"]["exec_id"]
    marker = f'"exec_id":"{exec_id}"'.encode()
    assert line.count(marker) == 1, line
    return [line.replace(marker, f'"exec_id":"{exec_id}-{i}"'.encode()) for i in range(count)]


def write_lines(path: Path, messages: list[Any]) -> Path:
    path.write_bytes(b"".join(to_line(m) for m in messages))
    return path


LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
LIBSSL_PURL = "pkg:deb/debian/libssl3@3.0.15-1~deb12u1?arch=amd64&distro=debian-12"
APP = "/opt/shop/bin/shop"
APP_PURL = "pkg:generic/shop@1.4.2"
KERNEL = "pkg:generic/linux-kernel"


def write_function_map(path: Path, paths: list[tuple[str, str, list[Any]]]) -> Any:
    """A function-map Statement with these paths: (path_id, tag, nodes)."""
    import hashlib

    from stella_bundle.attest.statement import FUNCTION_MAP_PREDICATE, make_statement
    from stella_bundle.canonical import canonical_bytes
    from stella_bundle.formats.function_map import Coverage, ExpectedPath, FunctionMap, SbomRef

    function_map = FunctionMap(
        service="shop",
        build_id="build-77",
        generated_at="2026-01-23T00:00:00.000000Z",
        sbom=SbomRef("sha256:" + "0" * 64, "CycloneDX", "1.5"),
        coverage=Coverage(min_observation_rate=1.0, window_seconds=3600),
        hot_functions=(),
        expected_paths=tuple(
            ExpectedPath(path_id, tag, 10, False, tuple(nodes)) for path_id, tag, nodes in paths
        ),
    )
    subject = {"name": "sbom.cdx.json", "digest": {"sha256": hashlib.sha256(b"sbom").hexdigest()}}
    statement = make_statement([subject], FUNCTION_MAP_PREDICATE, function_map.to_dict())
    path.write_bytes(canonical_bytes(statement))
    return function_map


def shop_map(path: Path) -> Any:
    """User-space nodes (libssl, the app, a USDT probe) and kernel nodes (openat, execve,
    tcp_connect)."""
    from stella_bundle.formats.function_map import ExpectedNode

    node = ExpectedNode.create
    return write_function_map(
        path,
        [
            (
                "tls",
                "crypto",
                [
                    node(APP_PURL, "checkout", binary_path=APP, build_id="aa" * 20),
                    node(LIBSSL_PURL, "SSL_write", binary_path=LIBSSL),
                    node(LIBSSL_PURL, "SSL_read", binary_path=LIBSSL),
                ],
            ),
            (
                "usdt",
                "general",
                [node(APP_PURL, "shop:order_placed", binary_path=APP, probe_types=("usdt",))],
            ),
            ("file", "file", [node(KERNEL, "openat", probe_types=("tracepoint", "kprobe"))]),
            ("exec", "exec", [node(KERNEL, "execve", probe_types=("tracepoint",))]),
            ("net", "net", [node(KERNEL, "tcp_connect", probe_types=("kprobe",))]),
        ],
    )
