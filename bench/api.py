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
    python bench/api.py --workers 4                       # stella serve --workers 4

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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--paths", type=int, default=100)
    parser.add_argument("--observations", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=1, help="stella serve --workers")
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
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "stella_bundle", "serve", "--listen", f"127.0.0.1:{port}",
         "--trust-root", str(directory / "trust-root.json"), "--tokens", str(directory / "tokens.json"),
         "--store", f"sqlite:///{directory / 'store.sqlite'}", "--workers", str(args.workers)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        auth = {"Authorization": f"Bearer {token}"}
        stored = httpx.post(
            base + "/api/v1/function-maps", content=canonical_bytes(document), headers=auth
        )
        stored.raise_for_status()
        url = f"{base}/api/v1/function-maps/{stored.json()['digest']}/verify"
        check = httpx.post(url, content=body, headers={**auth, "Content-Type": "application/json"})
        check.raise_for_status()
        report = check.json()
        print(f"map: {args.paths} paths; body: {args.observations} observations ({len(body) / 1e3:.0f} kB); "
              f"report: verified={report['verified']}, rate {report['observation_rate']:.3f}, "
              f"{len(report['unexpected_symbols'])} unexpected")  # fmt: skip
        print(f"cpus: {os.cpu_count()}, server workers: {args.workers}, "
              f"load average before: {os.getloadavg()[0]:.2f}")  # fmt: skip
        server_cpu = cpu_seconds(server.pid)
        client_cpu = time.process_time()
        result = asyncio.run(
            load("127.0.0.1", port, url.removeprefix(base), token, body, args.clients, args.seconds)
        )
        server_cpu = cpu_seconds(server.pid) - server_cpu
        client_cpu = time.process_time() - client_cpu
        latencies = result["latencies"]
        peer = library_peer(document, records, 3.0)
        rate = len(latencies) / result["elapsed"]
        print(f"API: {len(latencies)} reports in {result['elapsed']:.1f} s, {args.clients} clients: "
              f"{rate:.1f} req/s; latency p50 {percentile(latencies, 0.5) * 1e3:.1f} ms, "
              f"p90 {percentile(latencies, 0.9) * 1e3:.1f} ms, p99 {percentile(latencies, 0.99) * 1e3:.1f} ms; "
              f"errors {result['errors'] or 0}")  # fmt: skip
        done = max(1, len(latencies))
        print(f"CPU per request: server {server_cpu / done * 1e3:.2f} ms (all its processes), "
              f"client {client_cpu / done * 1e3:.2f} ms: the two CPUs allow at most "
              f"{2 / ((server_cpu + client_cpu) / done):.0f} req/s, "
              f"{args.clients} clients / that = {args.clients * (server_cpu + client_cpu) / done / 2 * 1e3:.0f} ms "
              f"of latency at best")  # fmt: skip
        print(f"peer (library verify + report, one thread): {peer * 1e3:.2f} ms per verification, "
              f"{1 / peer:.0f}/s; API throughput / library: {rate * peer:.2f}")  # fmt: skip
        p99 = percentile(latencies, 0.99) * 1e3
        print(f"target p99 <= 100 ms: {'met' if p99 <= 100 else 'NOT met'} ({p99:.1f} ms; "
              f"load average after: {os.getloadavg()[0]:.2f})")  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
