"""nginx with TLS under load: requests/s with and without the agent in coverage mode.

nginx (one worker, a self-signed P-256 certificate made by openssl at bench time) serves
https://127.0.0.1:<port>/ to `ab` on the same host, every request a new TLS connection (a full
handshake: most of libssl's and libcrypto's hot path each time). The agent is the real
`stella agent run` in coverage mode, its function map scoped to nginx's executable: the
libssl SSL_* and libcrypto EVP_* functions (256 probes by default), many of them on that path.
Coverage mode detaches a node's uprobe at its first hit, so after the window's first requests
nginx runs without traps: the "with agent" runs start after a 1 s lead-in load (the window's
first hits, reported apart), as in a 30-minute window where they are a few milliseconds; the
"without" runs have the same lead-in.

Peer, same run: nginx without the agent, a process waking every 100 ms in its place (see
`stand_in`), after a pause as long as the agent's start. Repeats are interleaved (without,
with, with, without, ...); the ratio is of the medians. nginx's CPU per request (its processes'
utime + stime, where uprobe traps are charged) is printed too. Target (issue 13): >= 0.97x.

    python3 bench/nginx_tls.py [--repeat 3] [--seconds 3] [--concurrency 4] [--probes 256]

Needs root, BTF, uprobes, nginx-light, apache2-utils and openssl (scripts/setup.sh).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # tls_support: the nginx set-up the tests use

from service_support import free_port, function_map_file, wait_ready  # noqa: E402
from tls_support import AB, NGINX, nginx_tls  # noqa: E402

from stella_bundle.attest.keys import generate_key  # noqa: E402
from stella_bundle.formats.function_map import ExpectedNode  # noqa: E402
from stella_bundle.functionmap.elf import index_binary  # noqa: E402

LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
LIBCRYPTO = "/usr/lib/x86_64-linux-gnu/libcrypto.so.3"
PURL = "pkg:deb/debian/libssl3"
_RATE = re.compile(r"^Requests per second:\s+([0-9.]+)", re.MULTILINE)
_FAILED = re.compile(r"^Failed requests:\s+([0-9]+)", re.MULTILINE)
_COMPLETE = re.compile(r"^Complete requests:\s+([0-9]+)", re.MULTILINE)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def map_functions(count: int) -> list[tuple[str, str]]:
    """(binary, function): libssl's SSL_* and libcrypto's EVP_* taken in turn."""
    ssl = sorted(name for name in index_binary(LIBSSL).functions if name.startswith("SSL_"))
    evp = sorted(name for name in index_binary(LIBCRYPTO).functions if name.startswith("EVP_"))
    out: list[tuple[str, str]] = []
    for pair in zip(ssl, evp, strict=False):
        out.extend([(LIBSSL, pair[0]), (LIBCRYPTO, pair[1])])
    return out[:count]


def nginx_cpu_seconds(master: int) -> float:
    """User + system CPU seconds of nginx's master and workers (uprobe traps count as theirs)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == master or int(fields[1]) == master:
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def load(url: str, seconds: float, concurrency: int, master: int = 0) -> tuple[float, float]:
    """Requests per second `ab` reached over `seconds` (every failed request refused), and
    nginx's CPU milliseconds per request (given its master pid)."""
    cpu_before = nginx_cpu_seconds(master) if master else 0.0
    done = subprocess.run(
        [AB, "-q", "-t", str(seconds), "-n", "10000000", "-c", str(concurrency), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    cpu = nginx_cpu_seconds(master) - cpu_before if master else 0.0
    rate, failed = _RATE.search(done.stdout), _FAILED.search(done.stdout)
    complete = _COMPLETE.search(done.stdout)
    if done.returncode != 0 or rate is None or failed is None or complete is None:
        raise SystemExit(f"ab failed ({done.returncode}): {done.stderr.strip()}")
    if int(failed.group(1)):
        raise SystemExit(f"ab: {failed.group(1)} failed requests")
    return float(rate.group(1)), cpu * 1000 / max(1, int(complete.group(1)))


def probes_attached(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(r"^stella_probes_attached(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.MULTILINE)
    return int(float(found.group(1))) if found else -1


@contextlib.contextmanager
def agent(work: Path) -> Iterator[int]:
    """`stella agent run` in coverage mode over the map in `work`; yields its metrics port."""
    port = free_port()
    (work / "stellaops.yaml").write_text(
        json.dumps(
            {
                "runtime_agent": {
                    "function_map": str(work / "fm.json"),
                    "metrics": {"listen": f"127.0.0.1:{port}", "verify_every_seconds": 60},
                    "export": {"output_path": str(work / f"evidence-{port}")},
                },
                "signals": {"signing": {"key_file": str(work / "collector.key")},
                            "mode": "coverage"},
            }
        )
    )  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "stella_bundle", "agent", "run", "--config",
         str(work / "stellaops.yaml")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
    )  # fmt: skip
    try:
        wait_ready(port, process, 120)
        if process.poll() is not None:
            raise SystemExit(f"the agent exited with {process.returncode}")
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)


@contextlib.contextmanager
def stand_in() -> Iterator[None]:
    """The peer's stand-in for the agent: a process waking every 100 ms (the agent's loop
    period), nothing else. On this VM any such process makes nginx under ab faster (measured:
    4 of 4 repeats, 10-400 %, an idle sleeper against none), more than a 3 % cost: without
    it the peer measures that effect, not the agent's probes and work."""
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time\nwhile True:\n    time.sleep(0.1)"]
    )
    try:
        yield
    finally:
        sleeper.kill()
        sleeper.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # ~12 s per repeat; stop 20's five repeats' ratios were 0.975-0.986 (each printed).
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--probes", type=int, default=256)
    args = parser.parse_args()
    functions = map_functions(args.probes)
    without: list[tuple[float, float]] = []  # (requests/s, nginx CPU ms per request)
    with_agent: list[tuple[float, float]] = []
    warm_up: list[float] = []
    attached: list[tuple[int, int]] = []  # probes attached at start, after the load
    starting: list[float] = []  # seconds from the agent's start to ready
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        nodes = [ExpectedNode.create(PURL, name, binary_path=binary) for binary, name in functions]
        function_map_file(work / "fm.json", nodes, "bench-nginx", window_seconds=1800,
                          scope={"executable": NGINX})  # fmt: skip
        generate_key("ed25519", work / "collector", None)
        (work / "nginx").mkdir()
        with nginx_tls(work / "nginx") as (url, master):
            load(url, 1.0, args.concurrency)  # nginx's and the host's caches warm
            for index in range(args.repeat):
                # without, with / with, without / ...: a drift of the host favours neither.
                order = ("without", "with") if index % 2 == 0 else ("with", "without")
                for kind in order:
                    if kind == "without":
                        with stand_in():
                            time.sleep(statistics.median(starting) if starting else 4.0)
                            load(url, 1.0, args.concurrency)
                            without.append(load(url, args.seconds, args.concurrency, master))
                        continue
                    began = time.monotonic()
                    with agent(work) as port:
                        starting.append(time.monotonic() - began)
                        at_start = probes_attached(port)
                        warm_up.append(load(url, 1.0, args.concurrency, master)[0])
                        with_agent.append(load(url, args.seconds, args.concurrency, master))
                        attached.append((at_start, probes_attached(port)))
    peer = statistics.median(r for r, _ in without)
    ours = statistics.median(r for r, _ in with_agent)
    peer_cpu = statistics.median(c for _, c in without)
    our_cpu = statistics.median(c for _, c in with_agent)
    ratio = ours / peer
    print(
        f"nginx TLS (1 worker, new connection per request), ab -c {args.concurrency}, "
        f"{args.seconds:.0f} s runs, median of {args.repeat} interleaved repeats"
    )
    print(f"agent: coverage mode, scope executable {NGINX}, {len(functions)} probes in the map; "
          f"attached at start {attached[0][0]}, after the load {attached[0][1]} "
          "(the others detached at their first hit)")  # fmt: skip
    print(f"{'':>28} {'requests/s':>10} {'nginx CPU ms/request':>21}")
    print(f"{'without (peer, stand-in)':>28} {peer:>10.0f} {peer_cpu:>21.3f}")
    print(f"{'with the agent':>28} {ours:>10.0f} {our_cpu:>21.3f}")
    print(f"{'first 1 s after attach':>28} {statistics.median(warm_up):>10.0f}")
    pairs = [(a[0], b[0]) for a, b in zip(with_agent, without, strict=True)]
    runs = ", ".join(f"{a:.0f}/{b:.0f} ({a / b:.3f})" for a, b in pairs)
    print(f"requests/s per repeat, with/without: {runs}")
    print(f"nginx CPU per request with / without: {our_cpu / peer_cpu:.3f}x (1.0: no cost)")
    verdict = "met" if ratio >= 0.97 else "NOT met"
    print(f"requests/s with / without: {ratio:.3f}x (target >= 0.97x): {verdict}")


if __name__ == "__main__":
    main()
