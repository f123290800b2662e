"""Runtime agent scale: attach and detach time for 250, 1,000 and 2,000 uprobes.

The probes are libcrypto's exported functions (a real map of that size; the few whose first
instruction cannot be probed are recorded as failures and skipped, as the collector does).
Attach is `Collector.start` (objects loaded, every link created); detach is `Collector.stop`
(links closed from a thread pool). The peer, measured in the same run, is closing links one by
one (how the collector stopped before): its per-link cost times N is the serial figure the
ratio compares with. Targets (issue 13): attach <= 2 s and detach <= 2 s for 2,000 probes.

    python3 bench/agent.py [--sizes 250,1000,2000] [--repeat 3] [--serial-sample 40]

Needs root, BTF and uprobes (uprobe_multi links for the parallel detach).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stella_bundle.collector.features import KernelFeatures, detect  # noqa: E402
from stella_bundle.collector.loader import ProbeRuntime, ProbeSet  # noqa: E402
from stella_bundle.collector.plan import build_plan  # noqa: E402
from stella_bundle.collector.session import Collector, CollectorConfig, MemorySink  # noqa: E402
from stella_bundle.formats.function_map import ExpectedNode  # noqa: E402
from stella_bundle.functionmap.elf import index_binary  # noqa: E402

LIBCRYPTO = "/usr/lib/x86_64-linux-gnu/libcrypto.so.3"
PURL = "pkg:deb/debian/libssl3"


def collector_for(size: int, features: KernelFeatures) -> Collector:
    functions = sorted(index_binary(LIBCRYPTO).functions)[:size]
    nodes = [ExpectedNode.create(PURL, name, binary_path=LIBCRYPTO) for name in functions]
    plan = build_plan(nodes, features)
    # Events only from pid 1 (filtered in the kernel): the host's own libcrypto calls are not
    # what is measured here.
    config = CollectorConfig(pids=(1,))
    return Collector(plan, ProbeRuntime(ProbeSet.open(), features), MemorySink(), config)


def attach_and_detach(size: int, features: KernelFeatures) -> tuple[float, float, int, int]:
    """(attach seconds, detach seconds, links attached, failures) of one start/stop."""
    collector = collector_for(size, features)
    started = time.perf_counter()
    collector.start()
    attached = time.perf_counter() - started
    links = len(collector.links)
    started = time.perf_counter()
    collector.stop()
    detached = time.perf_counter() - started
    return attached, detached, links, len(collector.probe_failures)


def serial_close_per_link(sample: int, features: KernelFeatures) -> float:
    """Seconds per link when links are closed one by one (the peer)."""
    collector = collector_for(sample, features)
    collector.start()
    links = list(collector.links.values())
    collector.links.clear()
    started = time.perf_counter()
    for link in links:
        collector.runtime.detach(link)
    per_link = (time.perf_counter() - started) / max(1, len(links))
    collector.stop()
    return per_link


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="250,1000,2000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--serial-sample", type=int, default=40)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    features = detect()
    link_kind = "uprobe_multi" if features.has("uprobe_multi") else "perf-event uprobe"
    results: dict[int, list[tuple[float, float, int, int]]] = {s: [] for s in sizes}
    serial: list[float] = []
    for _ in range(args.repeat):  # interleaved: every size and the peer in each round
        serial.append(serial_close_per_link(args.serial_sample, features))
        for size in sizes:
            results[size].append(attach_and_detach(size, features))
    per_link = statistics.median(serial)
    print(f"agent scale ({link_kind} links, median of {args.repeat} interleaved runs)")
    print(f"peer: closing links one by one, {per_link * 1000:.1f} ms per link")
    print(f"{'probes':>7} {'attached':>8} {'failed':>6} {'attach s':>9} {'detach s':>9} "
          f"{'serial s':>9} {'speed-up':>8}")  # fmt: skip
    for size in sizes:
        runs = results[size]
        attach = statistics.median(r[0] for r in runs)
        detach = statistics.median(r[1] for r in runs)
        links, failed = runs[0][2], runs[0][3]
        serial_seconds = per_link * links
        print(
            f"{size:>7} {links:>8} {failed:>6} {attach:>9.2f} {detach:>9.2f} "
            f"{serial_seconds:>9.1f} {serial_seconds / max(detach, 1e-9):>7.0f}x"
        )
    largest = max(sizes)
    attach = statistics.median(r[0] for r in results[largest])
    detach = statistics.median(r[1] for r in results[largest])
    verdict = "met" if attach <= 2 and detach <= 2 else "NOT met"
    print(f"target for {largest} probes: attach <= 2 s and detach <= 2 s: {verdict}")


if __name__ == "__main__":
    main()
