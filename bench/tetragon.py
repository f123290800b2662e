"""Tetragon bridge throughput: `process_uprobe` export lines into a signed chain, against a bare
`orjson.loads` loop over the same file.

The lines are built from Tetragon's own proto (the shipped descriptor set) and serialised as its
JSON export (protobuf JSON mapping, proto field names), varied per line (pid, time, symbol,
container). Ours: bounded line reader → orjson → event mapping (node look-up, container, time,
privacy filter) → ChunkWriter (validation, canonical JSON, sha256, zstd, Ed25519 seals). Peer:
`for line in file: orjson.loads(line)`. Repeats alternate peer and ours; medians are reported.
Targets (issue 12): >= 0.4x of bare parsing, >= 150,000 events/s (wall clock; CPU-seconds
printed beside, since a busy neighbour on this shared machine slows both). Always exits 0.

Usage: python bench/tetragon.py [--lines N] [--repeat N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from google.protobuf.json_format import MessageToDict

from stella_bundle.attest.keys import generate_key, load_signer
from stella_bundle.functionmap.model import (
    Coverage,
    ExpectedNode,
    ExpectedPath,
    FunctionMap,
    SbomRef,
)
from stella_bundle.tetragon.events import EventMapper
from stella_bundle.tetragon.grpc_source import message_classes
from stella_bundle.tetragon.ingest import TetragonIngest
from stella_bundle.tetragon.nodes import NodeIndex
from stella_bundle.tetragon.privacy import PrivacyFilter
from stella_bundle.tetragon.sources import DEFAULT_MAX_LINE_BYTES, file_lines

TARGET_RATIO = 0.4
TARGET_EVENTS_PER_SECOND = 150_000
LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
PURL = "pkg:deb/debian/libssl3@3.0.15-1~deb12u1?arch=amd64"
SYMBOLS = [f"SSL_func_{i}" for i in range(64)]


def function_map() -> FunctionMap:
    nodes = tuple(ExpectedNode.create(PURL, s, binary_path=LIBSSL) for s in SYMBOLS)
    return FunctionMap(
        "bench",
        "b1",
        "2026-01-23T00:00:00.000000Z",
        SbomRef("sha256:" + "0" * 64, "CycloneDX", "1.5"),
        Coverage(),
        (),
        (ExpectedPath("all", "crypto", 50, False, nodes),),
    )


def template_event() -> dict[str, Any]:
    """One process_uprobe GetEventsResponse as Tetragon's export writes it."""
    _, response_class = message_classes()
    message = response_class(node_name="bench-node")
    message.time.FromJsonString("2026-01-23T00:00:00.123456789Z")
    event = message.process_uprobe
    for process in (event.process, event.parent):
        process.exec_id = "YmVuY2gtbm9kZToxMjM0NTY3ODkwOjQyNDI="
        process.pid.value = 4242
        process.uid.value = 1000
        process.cwd = "/srv/app"
        process.binary = "/usr/bin/python3"
        process.arguments = "/srv/app/server.py --port 8443"
        process.flags = "execve clone"
        process.start_time.FromJsonString("2026-01-23T00:00:00.000001Z")
        process.auid.value = 4294967295
        process.docker = "3e7c5b9c1c2d4e5f6a7b8c9d0e1f2a3"
        process.parent_exec_id = "YmVuY2gtbm9kZToxMjM0NTAwMDAwOjQyMDA="
        process.refcnt = 1
        process.pod.namespace = "shop"
        process.pod.name = "api-7d9f8c-x2x9q"
        process.pod.container.id = "containerd://" + "3e7c5b9c" * 8
        process.pod.container.name = "api"
        process.pod.container.image.id = "docker.io/shop/api@sha256:" + "ab" * 32
        process.pod.container.image.name = "docker.io/shop/api:1.4.2"
        process.pod.container.start_time.FromJsonString("2026-01-22T23:00:00Z")
        process.pod.container.pid.value = 1
        process.pod.pod_labels["app"] = "api"
    event.path = LIBSSL
    event.symbol = SYMBOLS[0]
    event.policy_name = "stella-bench"
    return MessageToDict(message, preserving_proto_field_name=True)


def write_export(path: Path, count: int, seed: int = 12) -> int:
    rng = random.Random(seed)
    event = template_event()
    process = event["process_uprobe"]["process"]
    micros = 0
    with open(path, "wb", buffering=1 << 20) as handle:
        for _ in range(count):
            micros += rng.randrange(1, 200)
            seconds, micro = divmod(micros, 1_000_000)
            minutes, second = divmod(seconds, 60)
            event["time"] = f"2026-01-23T00:{minutes % 60:02d}:{second:02d}.{micro:06d}123Z"
            event["process_uprobe"]["symbol"] = rng.choice(SYMBOLS)
            process["pid"] = rng.randrange(100, 4_000_000)
            process["pod"]["container"]["id"] = f"containerd://{rng.randrange(16):064x}"
            handle.write(orjson.dumps(event) + b"\n")
    return path.stat().st_size


def bare(path: Path) -> int:
    loads = orjson.loads
    count = 0
    with open(path, "rb") as handle:
        for line in handle:
            loads(line)
            count += 1
    return count


def ours(path: Path, evidence: Path, signer: Any, nodes: NodeIndex) -> int:
    runner = TetragonIngest(evidence, "bench", signer, EventMapper(nodes, PrivacyFilter()))
    runner.feed(file_lines([path], DEFAULT_MAX_LINE_BYTES))
    result = runner.close()
    assert not result.dropped, result.dropped
    return result.records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stella-bench-tetragon-") as temp:
        workdir = Path(temp)
        export = workdir / "tetragon.log"
        size = write_export(export, args.lines)
        signer = load_signer(generate_key("ed25519", workdir / "collector", None).private_path)
        nodes = NodeIndex(function_map())
        bare(export)  # page cache warm for both
        peer_times, our_times, peer_cpu, our_cpu = [], [], [], []
        for run in range(args.repeat):
            began, began_cpu = time.perf_counter(), time.process_time()
            assert bare(export) == args.lines
            peer_times.append(time.perf_counter() - began)
            peer_cpu.append(time.process_time() - began_cpu)
            began, began_cpu = time.perf_counter(), time.process_time()
            assert ours(export, workdir / f"evidence-{run}", signer, nodes) == args.lines
            our_times.append(time.perf_counter() - began)
            our_cpu.append(time.process_time() - began_cpu)
        peer, mine = statistics.median(peer_times), statistics.median(our_times)
        cpu_ratio = statistics.median(peer_cpu) / statistics.median(our_cpu)
        peer_rate, our_rate = args.lines / peer, args.lines / mine
        ratio = our_rate / peer_rate
        chunks = len(list((workdir / "evidence-0" / "bench").glob("*.seal.dsse.json")))
        print(
            f"lines: {args.lines:,} process_uprobe events, {size / 1e6:.0f} MB export, "
            f"{chunks} sealed chunks; median of {args.repeat} alternating runs"
        )
        print(f"bare orjson.loads loop     : {peer_rate:10,.0f} events/s  ({peer:.2f} s)")
        print(f"tetragon ingest (signed)   : {our_rate:10,.0f} events/s  ({mine:.2f} s)")
        print(f"ratio in CPU-seconds       : {cpu_ratio:.2f}x   (this machine is shared)")
        print(
            f"ratio ours/bare rate       : {ratio:.2f}x   target >= {TARGET_RATIO}x "
            f"[{'met' if ratio >= TARGET_RATIO else 'NOT met'}];  rate target >= "
            f"{TARGET_EVENTS_PER_SECOND:,}/s "
            f"[{'met' if our_rate >= TARGET_EVENTS_PER_SECOND else 'NOT met'}]"
        )


if __name__ == "__main__":
    main()
