"""Benchmark: `POST /api/v1/function-maps/{id}/verify` under load, against the library call.

Starts a real `stella serve` (uvicorn) on loopback over a temporary SQLite store, stores a
P-path map, then runs C concurrent HTTP/1.1 keep-alive clients for S seconds, each posting the
same N observations and reading the report. The clients are plain asyncio (no HTTP library:
the load generator shares the two CPUs, and httpx cost more CPU per request than the server).
Prints requests/s, p50/p90/p99 latency, the error count, and the CPU time per request of the
server and of the clients, beside the peer measured in the same run: the same verification as
a plain library call in this process (`verify_observations` + `report()`), the work the
endpoint cannot avoid. The gap between the two is the HTTP, JSON and store cost.

    python bench/api.py                                   # 100 paths, 1,000 observations, 50 clients, 20 s
    python bench/api.py --seconds 5 --clients 10          # quicker, while developing
    python bench/api.py --workers 1                       # stella serve --workers 1 (default: one per CPU)
    git worktree add --detach /tmp/api-old COMMIT
    python bench/api.py --compare /tmp/api-old --rounds 3 # old and new code, rounds interleaved

Target (issue 11): p99 ≤ 100 ms. The machine is shared: the run prints the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from stella_bundle.api.tokens import TokenFile
from stella_bundle.attest.keys import generate_key
from stella_bundle.attest.statement import FUNCTION_MAP_PREDICATE, make_statement
from stella_bundle.canonical import canonical_bytes
from stella_bundle.coverage import verify_observations
from stella_bundle.formats.function_map import (
    Coverage,
    ExpectedNode,
    ExpectedPath,
    FunctionMap,
    SbomRef,
    priority_of,
)
from stella_bundle.formats.roles import ROLES
from stella_bundle.formats.trust_root import TrustRoot
from stella_bundle.functionmap.load import function_map_from_statement

REPO = Path(__file__).resolve().parents[1]
PURL = "pkg:generic/bench@1.0"
TAGS = ("crypto", "auth", "net", "file", "general")
PROBES = ("uprobe", "kprobe", "tracepoint", "fentry")


def node_hash(index: int) -> str:
    return "sha256:" + hashlib.sha256(f"{PURL}#fn_{index}".encode()).hexdigest()


def statement(paths: int) -> dict[str, Any]:
    expected = tuple(
        ExpectedPath(
            f"bench/{i:04d}",
            TAGS[i % len(TAGS)],
            priority_of(TAGS[i % len(TAGS)]),
            False,
            (ExpectedNode(PURL, f"fn_{i}", node_hash(i)),),
        )
        for i in range(paths)
    )
    fmap = FunctionMap(
        service="bench",
        build_id="bench",
        generated_at="2026-01-23T00:00:00.000000Z",
        sbom=SbomRef("sha256:" + "0" * 64, "CycloneDX", "1.6"),
        coverage=Coverage(min_observation_rate=0.9, fail_on_unexpected=False),
        hot_functions=(),
        expected_paths=expected,
    )
    return make_statement(
        [{"name": "bench.cdx.json", "digest": {"sha256": "0" * 64}}],
        FUNCTION_MAP_PREDICATE,
        fmap.to_dict(),
    )


def observations(count: int, paths: int) -> list[dict[str, Any]]:
    """`count` records over 95% of the paths, 1% outside the map."""
    out = []
    for i in range(count):
        node = (i * 7919) % max(1, paths * 95 // 100) if i % 100 else paths + i % 50
        second = i * 3600 // count
        out.append(
            {
                "node_hash": node_hash(node),
                "function_name": f"fn_{node}",
                "purl": PURL,
                "probe_type": PROBES[i % len(PROBES)],
                "observed_at": f"2026-01-23T10:{second // 60:02d}:{second % 60:02d}.000000Z",
                "pid": 1000 + i % 50,
            }
        )
    return out


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children so far (the server's workers)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bool]:
    """One request on a keep-alive connection: (status, whether the server keeps it open)."""
    writer.write(request)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length, keep = 0, True
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "connection" and value.strip().lower() == "close":
            keep = False
        elif name.lower() == "transfer-encoding":
            raise ValueError("chunked answer")  # the API answers with Content-Length
    await reader.readexactly(length)
    return status, keep


async def load(
    host: str, port: int, path: str, token: str, body: bytes, clients: int, seconds: float
) -> dict[str, Any]:
    """`clients` keep-alive HTTP/1.1 connections, each posting `body` again as soon as the
    last answer is read. A plain asyncio client (no HTTP library): httpx cost more CPU per
    request than the server, on the same two CPUs."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + seconds
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def worker() -> None:
        connection = None
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                if connection is None:
                    connection = await asyncio.open_connection(host, port)
                status, keep = await _exchange(*connection, request)
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                connection = None
                continue
            if not keep:
                connection[1].close()
                connection = None
            if status != 200:
                errors[str(status)] = errors.get(str(status), 0) + 1
                continue
            latencies.append(time.perf_counter() - start)
        if connection is not None:
            connection[1].close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - began
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed}


def library_peer(document: dict[str, Any], records: list[dict[str, Any]], seconds: float) -> float:
    """Seconds per verification as a library call (median over `seconds` of calls)."""
    fmap = function_map_from_statement(document, "<bench>")
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        verify_observations(fmap, records).report()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Served:
    """A `stella serve` of the source tree `tree` over a store of its own, the map stored."""

    def __init__(self, tree: Path, directory: Path, workers: int) -> None:
        self.tree = tree
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        store = directory / f"store-{self.port}.sqlite"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stella_bundle", "serve", "--listen", f"127.0.0.1:{self.port}",
             "--trust-root", str(directory / "trust-root.json"), "--tokens", str(directory / "tokens.json"),
             "--store", f"sqlite:///{store}", "--workers", str(workers)],
            # In the tree: `python -m` puts the working directory first on the path.
            cwd=tree,
            env={**os.environ, "PYTHONPATH": str(tree)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.path = ""

    def ready(self, token: str, document: dict[str, Any], body: bytes) -> dict[str, Any]:
        """Wait for the server, store the map, verify once; the report."""
        for _ in range(600):
            try:
                if httpx.get(self.base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        auth = {"Authorization": f"Bearer {token}"}
        stored = httpx.post(
            self.base + "/api/v1/function-maps", content=canonical_bytes(document), headers=auth
        )
        stored.raise_for_status()
        self.path = f"/api/v1/function-maps/{stored.json()['digest']}/verify"
        check = httpx.post(
            self.base + self.path,
            content=body,
            headers={**auth, "Content-Type": "application/json"},
        )
        check.raise_for_status()
        report: dict[str, Any] = check.json()
        return report

    def measure(self, token: str, body: bytes, clients: int, seconds: float) -> dict[str, Any]:
        server_cpu = cpu_seconds(self.process.pid)
        client_cpu = time.process_time()
        load_before = os.getloadavg()[0]
        result = asyncio.run(load("127.0.0.1", self.port, self.path, token, body, clients, seconds))
        server_cpu = cpu_seconds(self.process.pid) - server_cpu
        client_cpu = time.process_time() - client_cpu
        latencies = result["latencies"]
        done = max(1, len(latencies))
        return {
            "count": len(latencies),
            "elapsed": result["elapsed"],
            "rate": len(latencies) / result["elapsed"],
            "p50": percentile(latencies, 0.5) * 1e3 if latencies else float("inf"),
            "p90": percentile(latencies, 0.9) * 1e3 if latencies else float("inf"),
            "p99": percentile(latencies, 0.99) * 1e3 if latencies else float("inf"),
            "errors": result["errors"],
            "server_ms": server_cpu / done * 1e3,
            "client_ms": client_cpu / done * 1e3,
            "load": (load_before + os.getloadavg()[0]) / 2,
        }

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _without_source(report: dict[str, Any]) -> dict[str, Any]:
    # Each server has a store of its own, which the report names as the map's source.
    return {**report, "function_map": {**report["function_map"], "source": None}}


def _round_line(label: str, m: dict[str, Any], clients: int) -> str:
    return (
        f"{label}: {m['count']} reports in {m['elapsed']:.1f} s, {clients} clients: "
        f"{m['rate']:.1f} req/s; latency p50 {m['p50']:.1f} ms, p90 {m['p90']:.1f} ms, "
        f"p99 {m['p99']:.1f} ms; errors {m['errors'] or 0}; CPU per request: server "
        f"{m['server_ms']:.2f} ms, client {m['client_ms']:.2f} ms; load average {m['load']:.2f}"
    )


def _median(rounds: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(m[key] for m in rounds))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--paths", type=int, default=100)
    parser.add_argument("--observations", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="stella serve --workers (default: one per CPU, as the server would be deployed)",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="TREE",
        help="another source tree (e.g. `git worktree add /tmp/old COMMIT`) served the same way; "
        "rounds alternate between the two servers and the medians are compared",
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds per server (median)")
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="stella-bench-api-"))
    root = TrustRoot(expires=dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
    for role in ROLES:
        root.add_key(generate_key("ed25519", directory / role, None).public_key, [role])
    root.save(directory / "trust-root.json")
    tokens = TokenFile(path=directory / "tokens.json")
    token = tokens.add("bench", ["write"])
    tokens.save()

    document = statement(args.paths)
    records = observations(args.observations, args.paths)
    body = json.dumps({"observations": records}).encode()
    servers = {"this tree": Served(REPO, directory, args.workers)}
    if args.compare is not None:
        servers["compared"] = Served(args.compare.resolve(), directory, args.workers)
    try:
        reports = [served.ready(token, document, body) for served in servers.values()]
        report = reports[0]
        if any(_without_source(other) != _without_source(report) for other in reports[1:]):
            print("note: the two trees' reports differ (fine when the report format changed)")
        print(f"map: {args.paths} paths; body: {args.observations} observations ({len(body) / 1e3:.0f} kB); "
              f"report: verified={report['verified']}, rate {report['observation_rate']:.3f}, "
              f"{len(report['unexpected_symbols'])} unexpected")  # fmt: skip
        print(f"cpus: {os.cpu_count()}, server workers: {args.workers}, "
              f"load average before: {os.getloadavg()[0]:.2f}")  # fmt: skip
        rounds: dict[str, list[dict[str, Any]]] = {label: [] for label in servers}
        for number in range(1, args.rounds + 1):
            for label, served in servers.items():  # interleaved: the same load for both
                measured = served.measure(token, body, args.clients, args.seconds)
                rounds[label].append(measured)
                if args.rounds > 1 or len(servers) > 1:
                    print(_round_line(f"round {number}, {label}", measured, args.clients))
        peer = library_peer(document, records, 3.0)
        mine = rounds["this tree"]
        rate, p99 = _median(mine, "rate"), _median(mine, "p99")
        server_ms, client_ms = _median(mine, "server_ms"), _median(mine, "client_ms")
        print(_round_line("API" + (" (medians)" if args.rounds > 1 else ""), {
            key: (_median(mine, key) if key != "errors" else mine[-1]["errors"])
            for key in mine[0]}, args.clients))  # fmt: skip
        print(f"CPU per request: server {server_ms:.2f} ms (all its processes), "
              f"client {client_ms:.2f} ms: the two CPUs allow at most "
              f"{2 / ((server_ms + client_ms) / 1e3):.0f} req/s, "
              f"{args.clients} clients / that = {args.clients * (server_ms + client_ms) / 2:.0f} ms "
              f"of latency at best")  # fmt: skip
        print(f"peer (library verify + report, one thread): {peer * 1e3:.2f} ms per verification, "
              f"{1 / peer:.0f}/s; API throughput / library: {rate * peer:.2f}")  # fmt: skip
        if "compared" in rounds:
            other = rounds["compared"]
            print(f"this tree / compared (medians of {args.rounds}): req/s "
                  f"{rate / _median(other, 'rate'):.2f}x, p99 {p99 / _median(other, 'p99'):.2f}x, "
                  f"server CPU per request {server_ms / _median(other, 'server_ms'):.2f}x "
                  f"({server_ms:.2f} vs {_median(other, 'server_ms'):.2f} ms)")  # fmt: skip
        print(f"target p99 <= 100 ms: {'met' if p99 <= 100 else 'NOT met'} ({p99:.1f} ms; "
              f"load average after: {os.getloadavg()[0]:.2f})")  # fmt: skip
    finally:
        for served in servers.values():
            served.stop()
        shutil.rmtree(directory, ignore_errors=True)  # its stores: 30-500 MB a run


if __name__ == "__main__":
    main()
