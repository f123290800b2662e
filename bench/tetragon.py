"""Tetragon bridge throughput: `process_uprobe` export lines into a signed chain, against a bare
`orjson.loads` loop over the same file.

The lines are built from Tetragon's own proto (the shipped descriptor set) and serialised as its
JSON export (protobuf JSON mapping, proto field names), varied per line (pid, time, symbol,
container). Ours: bounded line reader → orjson → event mapping (node look-up, container, time,
privacy filter) → ChunkWriter (validation, canonical JSON, sha256, zstd, Ed25519 seals). Peer:
`for line in file: orjson.loads(line)`. Ours twice: in one process, and with mapping workers
(read + decode + map of 4 MiB blocks in one worker per core, write + seal in this process;
tetragon/parallel.py). Repeats interleave the three arms; medians are reported, CPU-seconds
summed over all processes, with the CPU per event and the load average.
Targets (issue 12): >= 0.4x of bare parsing, >= 150,000 events/s (wall clock; CPU-seconds
printed beside, since a busy neighbour on this shared machine slows both). Always exits 0.

The export is kept between runs in $TMPDIR/stella-bench-tetragon, named by a digest of what
makes it (line count, seed, the template event, the generator's source), so a changed generator
or proto writes a new one. The "one process" arm (the fallback for small inputs, no target) runs
in one of the repeats unless --one-process-runs says more; bare and workers run in every repeat.

Usage: python bench/tetragon.py [--lines N] [--repeat N] [--one-process-runs N]
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import os
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from google.protobuf.json_format import MessageToDict

from stella_bundle.attest.keys import generate_key, load_signer
from stella_bundle.formats.function_map import (
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
from stella_bundle.tetragon.parallel import MAX_WORKERS, feed_files
from stella_bundle.tetragon.privacy import PrivacyFilter
from stella_bundle.tetragon.sources import DEFAULT_MAX_LINE_BYTES

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


def cached_export(count: int, seed: int = 12) -> Path:
    """The export of `count` lines, written once per digest of its inputs and kept."""
    folder = Path(tempfile.gettempdir()) / "stella-bench-tetragon"
    digest = hashlib.sha256(
        orjson.dumps([count, seed, template_event(), SYMBOLS, inspect.getsource(write_export)])
    ).hexdigest()[:16]
    path = folder / f"export-{count}-{digest}.log"
    if path.exists():
        return path
    folder.mkdir(exist_ok=True)
    for stale in folder.glob("export-*"):  # other inputs or sizes: ~1.7 GB per million lines
        stale.unlink()
    started = time.perf_counter()
    write_export(path.with_suffix(".part"), count, seed)
    path.with_suffix(".part").replace(path)
    print(f"export written in {time.perf_counter() - started:.1f} s (untimed, kept in {folder})")
    return path


def read_through(path: Path) -> None:
    """The file into the page cache (a kept export may have left it), without parsing it."""
    with open(path, "rb", buffering=0) as handle:
        while handle.read(16 << 20):
            pass


# The peer, the in-process ingest, and the ingest with mapping workers (tetragon/parallel.py).
ARMS = ("bare", "one process", "workers")


def cpu_seconds() -> float:
    """CPU of this process and of its waited-for children (the mapping workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bare(path: Path) -> int:
    loads = orjson.loads
    count = 0
    with open(path, "rb") as handle:
        for line in handle:
            loads(line)
            count += 1
    return count


def ours(path: Path, evidence: Path, signer: Any, nodes: NodeIndex, parallel: bool) -> int:
    runner = TetragonIngest(evidence, "bench", signer, EventMapper(nodes, PrivacyFilter()))
    feed_files(runner, [path], DEFAULT_MAX_LINE_BYTES, parallel=parallel)
    result = runner.close()
    assert not result.dropped, result.dropped
    return result.records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    # Two: stop 20's three runs of each arm were within 1-2 % (bare 6.86 6.93 6.85 s, workers
    # 4.87 4.80 4.77 s); every run is printed.
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--one-process-runs", type=int, default=1)
    args = parser.parse_args()
    export = cached_export(args.lines)
    size = export.stat().st_size
    # The one-process arm in the middle repeats (away from the first, where caches settle).
    first_one = max(0, (args.repeat - args.one_process_runs + 1) // 2)
    one_process_runs = range(first_one, first_one + args.one_process_runs)
    with tempfile.TemporaryDirectory(prefix="stella-bench-tetragon-") as temp:
        workdir = Path(temp)
        signer = load_signer(generate_key("ed25519", workdir / "collector", None).private_path)
        nodes = NodeIndex(function_map())
        read_through(export)
        runs: dict[str, tuple[list[float], list[float]]] = {a: ([], []) for a in ARMS}
        for run in range(args.repeat):
            for arm in ARMS:  # interleaved: a load change hits every arm alike
                if arm == "one process" and run not in one_process_runs:
                    continue
                began, began_cpu = time.perf_counter(), cpu_seconds()
                if arm == "bare":
                    assert bare(export) == args.lines
                else:
                    target = workdir / f"evidence-{arm}-{run}"
                    parallel = arm == "workers"
                    assert ours(export, target, signer, nodes, parallel) == args.lines
                runs[arm][0].append(time.perf_counter() - began)
                runs[arm][1].append(cpu_seconds() - began_cpu)
        wall = {arm: statistics.median(times) for arm, (times, _) in runs.items()}
        cpu = {arm: statistics.median(seconds) for arm, (_, seconds) in runs.items()}
        chunks = len(list((workdir / "evidence-workers-0" / "bench").glob("*.seal.dsse.json")))
        workers = min(len(os.sched_getaffinity(0)), MAX_WORKERS)
        print(
            f"lines: {args.lines:,} process_uprobe events, {size / 1e6:.0f} MB export, "
            f"{chunks} sealed chunks; median of {args.repeat} interleaved runs (one process: "
            f"{len(runs['one process'][0])}); "
            f"{workers} workers; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        print(
            "arm              events/s   wall s   ratio(rate)  CPU s (all processes)  "
            "ratio(CPU)  CPU us/event"
        )
        for arm in ARMS:
            rate = args.lines / wall[arm]
            print(
                f"{arm:<13} {rate:11,.0f} {wall[arm]:8.2f}   {wall['bare'] / wall[arm]:8.2f}x"
                f"   {cpu[arm]:10.2f}            {cpu['bare'] / cpu[arm]:6.2f}x"
                f"   {cpu[arm] / args.lines * 1e6:8.2f}"
            )
        for arm in ARMS:  # every run, to see the spread the medians hide
            print(f"  {arm:<14} wall s: {' '.join(f'{t:.2f}' for t in runs[arm][0])}")
        best = args.lines / wall["workers"]
        ratio = wall["bare"] / wall["workers"]
        print(
            f"workers: ratio {ratio:.2f}x, target >= {TARGET_RATIO}x "
            f"[{'met' if ratio >= TARGET_RATIO else 'NOT met'}];  rate target >= "
            f"{TARGET_EVENTS_PER_SECOND:,}/s [{'met' if best >= TARGET_EVENTS_PER_SECOND else 'NOT met'}]"
        )


if __name__ == "__main__":
    main()
