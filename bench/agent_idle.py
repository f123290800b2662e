"""Runtime agent at rest: CPU and memory of `stella agent run` with 256 probes on an idle host.

The agent is measured through its own metrics endpoint (process_cpu_seconds_total,
process_resident_memory_bytes: what an operator's Prometheus sees). The peer, measured in the
same run, is bpftrace holding the same 256 libcrypto uprobes, read from /proc. Events only from
pid 1 (filtered in the kernel, as a service-scoped agent would be), so the host's own libcrypto
calls cost neither much. Targets (issue 13): <= 1% of a core and <= 100 MB resident.

Both run at once and are measured over the same window (each its own process's CPU): at rest
neither uses the CPU the other would want, and a uprobe's cost falls on the process that hits
it, not on the agent or bpftrace. Sequential windows took twice the wall time for the same figures.

    python3 bench/agent_idle.py [--probes 256] [--seconds 30]

Needs root, BTF, uprobes, bpftrace.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # service_support: the set-up the tests use

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from service_support import free_port, function_map_file, wait_ready  # noqa: E402

from stella_bundle.attest.keys import generate_key  # noqa: E402
from stella_bundle.formats.function_map import ExpectedNode  # noqa: E402
from stella_bundle.functionmap.elf import index_binary  # noqa: E402

LIBCRYPTO = "/usr/lib/x86_64-linux-gnu/libcrypto.so.3"
PURL = "pkg:deb/debian/libssl3"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels or sample.name == "stella_probes_attached"
    }


@contextlib.contextmanager
def running_agent(work: Path, functions: list[str]) -> Iterator[Callable[[], dict[str, float]]]:
    """The agent started and ready; yields its metrics scrape (an operator's Prometheus view)."""
    nodes = [ExpectedNode.create(PURL, name, binary_path=LIBCRYPTO) for name in functions]
    function_map_file(work / "fm.json", nodes, service="bench-idle", window_seconds=1800)
    generate_key("ed25519", work / "collector", None)
    port = free_port()
    (work / "stellaops.yaml").write_text(
        json.dumps(
            {
                "runtime_agent": {
                    "function_map": str(work / "fm.json"),
                    "metrics": {"listen": f"127.0.0.1:{port}", "verify_every_seconds": 60},
                    "export": {"output_path": str(work / "evidence")},
                },
                "signals": {"signing": {"key_file": str(work / "collector.key")}, "pids": [1]},
            }
        )
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "stella_bundle", "agent", "run", "--config",
         str(work / "stellaops.yaml")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
    )  # fmt: skip
    try:
        wait_ready(port, agent, 120)
        if agent.poll() is not None:
            raise SystemExit(f"the agent exited with {agent.returncode}")
        yield lambda: scrape(port)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=120)


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1000
    return 0.0


@contextlib.contextmanager
def running_bpftrace(functions: list[str]) -> Iterator[int | None]:
    """bpftrace holding the same uprobes, once every probe is attached; yields its pid (None
    without bpftrace)."""
    bpftrace = shutil.which("bpftrace")
    if bpftrace is None:
        yield None
        return
    probes = ",\n".join(f"uprobe:{LIBCRYPTO}:{name}" for name in functions)
    program = f"{probes}\n/pid == 1/ {{ @[probe] = count(); }}\n"
    peer = subprocess.Popen(
        [bpftrace, "-e", program], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert peer.stdout is not None
        for line in peer.stdout:  # "Attaching N probes..." comes once every probe is attached
            if line.startswith("Attaching"):
                break
        yield peer.pid
    finally:
        peer.send_signal(signal.SIGINT)
        peer.communicate(timeout=120)


def measure(
    work: Path, functions: list[str], seconds: float
) -> tuple[float, float, int, tuple[float, float] | None]:
    """(agent's share of a core, its resident MB, probes attached, bpftrace's (share, MB)),
    both over the same window."""
    with running_bpftrace(functions) as peer, running_agent(work, functions) as agent_metrics:
        time.sleep(3)  # past start-up work (imports, attach)
        before = agent_metrics()
        peer_before = proc_cpu_seconds(peer) if peer is not None else 0.0
        time.sleep(seconds)
        after = agent_metrics()
        peer_figures = None
        if peer is not None:
            peer_figures = ((proc_cpu_seconds(peer) - peer_before) / seconds, proc_rss_mb(peer))
    cpu = (after["process_cpu_seconds_total"] - before["process_cpu_seconds_total"]) / seconds
    rss = after["process_resident_memory_bytes"] / 1e6
    return cpu, rss, int(after["stella_probes_attached"]), peer_figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    # Functions from the middle of the sorted list: fewer of libcrypto's lock-prefixed
    # reference counters (which no uprobe can take) than at the start.
    names = sorted(index_binary(LIBCRYPTO).functions)
    functions = names[1000 : 1000 + args.probes]
    with tempfile.TemporaryDirectory() as temp:
        cpu, rss, attached, peer = measure(Path(temp), functions, args.seconds)
    print(
        f"agent at rest: {attached} probes attached, idle host, {args.seconds:.0f} s measured "
        "(the agent and bpftrace over the same window)"
    )
    print(f"{'':>22} {'CPU % core':>10} {'RSS MB':>8}")
    print(f"{'stella agent run':>22} {cpu * 100:>10.2f} {rss:>8.1f}")
    if peer is not None:
        print(f"{'bpftrace (peer)':>22} {peer[0] * 100:>10.2f} {peer[1]:>8.1f}")
        print(
            f"ratio agent / bpftrace: CPU {cpu / max(peer[0], 1e-9):.1f}x, RSS {rss / peer[1]:.2f}x"
        )
    verdict = "met" if cpu <= 0.01 and rss <= 100 else "NOT met"
    print(f"target: <= 1% of a core and <= 100 MB resident: {verdict}")


if __name__ == "__main__":
    main()
