"""Benchmark: `stella function-map verify` against DuckDB doing the same join on the same file.

Generates N observation records (canonical NDJSON, time-ordered like collector chunks) and a
function map of P paths in a temporary directory, then measures, each in a fresh process:
  * `stella function-map verify --function-map FM --observations OBS --format json`
  * DuckDB: read_ndjson + per-node aggregation + join with the map's nodes + group by path
and prints records/s for both, the ratio, and the peak RSS of each (medians of --repeat
interleaved runs: the development VM is shared and single runs vary by a third). The verifier
is run again on a quarter of the records to show its peak memory does not grow with the record
count.

    python bench/verify.py                      # 1,000,000 records, 10,000 paths
    python bench/verify.py --records 200000     # smaller, while developing
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stella_bundle.attest.statement import FUNCTION_MAP_PREDICATE, make_statement
from stella_bundle.canonical import canonical_bytes
from stella_bundle.coverage import compiled
from stella_bundle.formats.function_map import (
    Coverage,
    ExpectedNode,
    ExpectedPath,
    FunctionMap,
    SbomRef,
    priority_of,
)

PURL = "pkg:generic/bench-app@1.0.0"
PROBES = ("uprobe", "uprobe", "uprobe", "uretprobe", "kprobe", "tracepoint")
TAGS = ("crypto", "auth", "net", "file", "general")

DUCKDB_QUERY = """
WITH obs AS (
    SELECT node_hash, count(*) AS records, min(observed_at) AS first_seen,
           max(observed_at) AS last_seen, list(DISTINCT probe_type) AS probe_types
    FROM read_ndjson('{observations}')
    GROUP BY node_hash
),
per_path AS (
    SELECT p.path_id, count(*) AS total, count(obs.node_hash) AS observed
    FROM read_json('{nodes}') AS p LEFT JOIN obs USING (node_hash)
    GROUP BY p.path_id
)
SELECT
    (SELECT count(*) FROM per_path WHERE observed = total) AS observed_paths,
    (SELECT count(*) FROM per_path) AS paths,
    (SELECT count(*) FROM obs ANTI JOIN (SELECT DISTINCT node_hash FROM read_json('{nodes}')) AS m
        USING (node_hash)) AS unexpected_nodes,
    (SELECT sum(records) FROM obs) AS records
"""

DUCKDB_SCRIPT = """
import json, resource, sys, time
import duckdb
start = time.perf_counter()
# No progress bar: past 2 s DuckDB draws one on stdout, which is this script's answer.
connection = duckdb.connect()
connection.execute("SET enable_progress_bar = false")
row = connection.execute(sys.argv[1]).fetchone()
elapsed = time.perf_counter() - start
print(json.dumps({"row": [int(v) for v in row], "query_seconds": elapsed,
                  "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def node_hashes(count: int) -> list[str]:
    # The symbol of node i is fn_i; node_hash per DESIGN §4 (purl already canonical).
    return ["sha256:" + hashlib.sha256(f"{PURL}#fn_{i}".encode()).hexdigest() for i in range(count)]


def write_map(directory: Path, paths: int, hashes: list[str]) -> tuple[Path, Path]:
    """A map of `paths` paths of 1-3 nodes covering `hashes` (every node is in some path while
    there are enough paths); and a nodes table for DuckDB."""
    rng = random.Random(7)
    expected = []
    rows = []
    pool: list[int] = []
    for index in range(paths):
        size = rng.choice((1, 2, 3))
        picks = []
        for _ in range(size):
            if not pool:
                pool = list(range(len(hashes)))
                rng.shuffle(pool)
            picks.append(pool.pop())
        nodes = tuple(ExpectedNode(PURL, f"fn_{i}", hashes[i]) for i in dict.fromkeys(picks))
        tag = TAGS[index % len(TAGS)]
        path_id = f"bench/{index:06d}"
        expected.append(ExpectedPath(path_id, tag, priority_of(tag), index % 10 == 0, nodes))
        rows += [{"path_id": path_id, "node_hash": n.node_hash} for n in nodes]
    fmap = FunctionMap(
        service="bench",
        build_id="bench",
        generated_at="2026-01-23T00:00:00.000000Z",
        sbom=SbomRef("sha256:" + "0" * 64, "CycloneDX", "1.6"),
        coverage=Coverage(min_observation_rate=0.95, fail_on_unexpected=False),
        hot_functions=(),
        expected_paths=tuple(expected),
    )
    statement = make_statement(
        [{"name": "bench.cdx.json", "digest": {"sha256": "0" * 64}}],
        FUNCTION_MAP_PREDICATE,
        fmap.to_dict(),
    )
    map_path = directory / "function-map.json"
    map_path.write_bytes(canonical_bytes(statement))
    nodes_path = directory / "nodes.json"
    nodes_path.write_text(json.dumps(rows))
    return map_path, nodes_path


def write_observations(path: Path, records: int, hashes: list[str], seed: int = 1) -> int:
    """Canonical NDJSON (sorted keys), time-ordered; 1% of records hit nodes outside the map."""
    rng = random.Random(seed)
    stray = node_hashes(len(hashes) + 200)[len(hashes) :]  # fn_N … fn_N+199: not in the map
    with path.open("wb", buffering=1 << 20) as handle:
        batch = []
        for index in range(records):
            if rng.random() < 0.01:
                pick = rng.randrange(200)
                node, name = stray[pick], f"fn_{len(hashes) + pick}"
            else:
                choice = rng.randrange(len(hashes))
                node, name = hashes[choice], f"fn_{choice}"
            second, micro = divmod(index * 1000, 1_000_000)
            stamp = f"2026-01-23T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}.{micro:06d}Z"
            probe = PROBES[index % len(PROBES)]
            batch.append(
                f'{{"function_name":"{name}","node_hash":"{node}","observed_at":"{stamp}",'
                f'"pid":{1000 + index % 50},"probe_type":"{probe}"}}\n'
            )
            if len(batch) >= 10000:
                handle.write("".join(batch).encode())
                batch.clear()
        handle.write("".join(batch).encode())
    return path.stat().st_size


def run_stella(map_path: Path, observations: Path, workers: int | None) -> tuple[float, int, dict]:
    command = [sys.executable, "-m", "stella_bundle", "function-map", "verify",
               "--function-map", str(map_path), "--observations", str(observations),
               "--format", "json"]  # fmt: skip
    if workers is not None:
        command += ["--workers", str(workers)]
    # Peak RSS: the largest process of the tree (the CLI or one of its scan workers).
    script = (
        "import json, resource, subprocess, sys, time\n"
        "start = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "elapsed = time.perf_counter() - start\n"
        "print(json.dumps({'code': p.returncode, 'elapsed': elapsed, 'stdout': p.stdout, 'stderr': p.stderr,"
        " 'max_rss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, *command], capture_output=True, text=True, check=True
    )
    outcome = json.loads(completed.stdout)
    if outcome["code"] not in (0, 1):
        raise SystemExit(f"stella verify failed: {outcome['stderr']}")
    return outcome["elapsed"], outcome["max_rss_kb"], json.loads(outcome["stdout"])


LIBRARY_SCRIPT = """
import json, sys, time
start = time.perf_counter()
from stella_bundle.coverage import VerifyOptions, verify_map_files
imported = time.perf_counter()
# The map loaded while the scan runs (what `function-map verify` does with files).
_, result = verify_map_files(
    sys.argv[1], [sys.argv[2]], VerifyOptions(workers=int(sys.argv[3]) if sys.argv[3] else None)
)
done = time.perf_counter()
print(json.dumps({"import": imported - start, "verify": done - imported,
                  "observed": sum(1 for p in result.per_path_breakdown if p["status"] == "observed")}))
"""


def run_library(map_path: Path, observations: Path, workers: int | None) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", LIBRARY_SCRIPT, str(map_path), str(observations), str(workers or "")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(completed.stdout)


def cli_startup() -> float:
    """Wall time of `stella --version`: importing the CLI, which loads every command group."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "stella_bundle", "--version"], capture_output=True, check=True
        )
        best = min(best, time.perf_counter() - start)
    return best


def run_duckdb(observations: Path, nodes: Path) -> tuple[float, int, dict]:
    query = DUCKDB_QUERY.format(observations=observations, nodes=nodes)
    start = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", DUCKDB_SCRIPT, query], capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"duckdb failed: {completed.stderr}")
    return elapsed, 0, json.loads(completed.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--paths", type=int, default=10_000)
    parser.add_argument(
        "--nodes", type=int, default=None, help="distinct map nodes (default 2×paths)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="stella scan processes (default CPUs)"
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the generated files here")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each side, interleaved; the median is reported (the VM is shared)",
    )
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="stella-bench-verify-"))
    try:
        hashes = node_hashes(args.nodes or 2 * args.paths)
        map_path, nodes_path = write_map(directory, args.paths, hashes)
        full = directory / "observations.ndjson"
        quarter = directory / "observations-quarter.ndjson"
        t0 = time.perf_counter()
        size = write_observations(full, args.records, hashes)
        write_observations(quarter, max(1, args.records // 4), hashes, seed=2)
        print(f"generated {args.records:,} records ({size / 1e6:.1f} MB, {size / args.records:.0f} B/record), "
              f"{args.paths:,} paths over {len(hashes):,} nodes in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        print(
            f"cpus: {os.cpu_count()}, stella workers: {args.workers or os.cpu_count()}, duckdb threads: default"
        )
        # Which per-record fold the stella runs use (they import the same tree): the compiled
        # one, or the Python fallback when it is not built (coverage/compiled.py).
        print(f"stella fold: {compiled.STATUS}")

        duck_walls, duck_queries, stella_walls, library_verifies = [], [], [], []
        stella_rss = 0
        for _ in range(max(1, args.repeat)):
            wall, _, duck = run_duckdb(full, nodes_path)
            duck_walls.append(wall)
            duck_queries.append(duck["query_seconds"])
            wall, rss, report = run_stella(map_path, full, args.workers)
            stella_walls.append(wall)
            stella_rss = max(stella_rss, rss)
            library_verifies.append(run_library(map_path, full, args.workers)["verify"])
        duck_wall = statistics.median(duck_walls)
        duck["query_seconds"] = statistics.median(duck_queries)
        stella_wall = statistics.median(stella_walls)
        library = {"verify": statistics.median(library_verifies)}
        _, quarter_rss, _ = run_stella(map_path, quarter, args.workers)
        startup = cli_startup()

        observed_paths = sum(1 for p in report["per_path_breakdown"] if p["status"] == "observed")
        duck_observed, duck_paths, duck_unexpected, duck_records = duck["row"]
        agree = (
            observed_paths == duck_observed
            and len(report["per_path_breakdown"]) == duck_paths
            and len(report["unexpected_symbols"]) == duck_unexpected
            and report["records"]["read"] == duck_records == args.records
        )
        rows = [
            ("stella function-map verify", stella_wall, stella_rss / 1024),
            ("duckdb (process)", duck_wall, duck["max_rss_kb"] / 1024),
            ("duckdb (query only)", duck["query_seconds"], None),
            ("stella library (load+verify)", library["verify"], None),
        ]
        print()
        print(f"{'':30}{'wall s':>10}{'records/s':>14}{'peak RSS MiB':>14}")
        for name, seconds, rss in rows:
            memory = f"{rss:>14.1f}" if rss is not None else ""
            print(f"{name:30}{seconds:>10.2f}{args.records / seconds:>14,.0f}{memory}")
        print(f"{'stella CLI start-up only':30}{startup:>10.2f}")
        print(f"(medians of {max(1, args.repeat)} interleaved runs; stella CLI runs: "
              f"{' '.join(f'{w:.2f}' for w in stella_walls)}, duckdb: "
              f"{' '.join(f'{w:.2f}' for w in duck_walls)})")  # fmt: skip
        print()
        print(
            f"ratio stella CLI / duckdb process:  {stella_wall / duck_wall:.2f}x  (target <= 2.00x)"
        )
        print(f"ratio stella library / duckdb query (no interpreter start-up on either side): "
              f"{library['verify'] / duck['query_seconds']:.2f}x")  # fmt: skip
        print(
            f"cpu load (1-min average) after the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus"
        )
        print(f"peak RSS stella: {quarter_rss / 1024:.1f} MiB at {args.records // 4:,} records, "
              f"{stella_rss / 1024:.1f} MiB at {args.records:,} records "
              f"(growth {stella_rss / max(quarter_rss, 1):.2f}x for 4x the records)")  # fmt: skip
        print(f"results agree with duckdb (observed paths {observed_paths}/{duck_paths}, unexpected nodes "
              f"{len(report['unexpected_symbols'])}, records {report['records']['read']:,}): {agree}")  # fmt: skip
        if not agree:
            raise SystemExit("stella and duckdb disagree")
    finally:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            for item in directory.iterdir():
                shutil.move(str(item), args.keep / item.name)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
