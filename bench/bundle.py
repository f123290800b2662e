"""Bundle build and verify throughput against `tar -czf` and `tar -xzf` + `sha256sum`.

Evidence: typical collector records for a 12-node OpenSSL function map, sealed by the real
`ChunkWriter` (zstd, 64 MiB rotation, Ed25519 seals). Then, in the same run:

- build: `stella bundle build` (scan-validating every record, the merged sorted observations
  view, manifest hashing, gzip (ISA-L level 2) of everything) against `tar -czf` of the same files (the
  bundle's own files, extracted beforehand: maps, chunks, seals, the view, schemas);
- verify: `stella bundle verify` (one streaming pass: every digest, every record decompressed,
  parsed and schema-checked, every seal's signature, the coverage verdict) against
  `tar -xzf` of the same bundle followed by `sha256sum` of every extracted file.

Each command runs as a child process; its peak RSS comes from wait4(). Rounds are
interleaved (build, tar -czf, verify, tar -xzf + sha256sum, again) and every figure is the
median over rounds, so a change of the machine's load falls on stella and its peers alike.
Targets (issue 15): build <= 1.0x tar -czf, verify >= 1.0x the throughput of tar -xzf +
sha256sum, peak memory < 200 MB for both. Always exits 0: the figures are the result.

Usage: python bench/bundle.py [--records N] [--repeats R]
(2,200,000 records ≈ 1 GB of uncompressed evidence)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import stella_bundle
from stella_bundle.attest.keys import generate_key, load_signer
from stella_bundle.attest.signing import sign_to_file
from stella_bundle.canonical import canonical_bytes
from stella_bundle.evidence.encoding import encode_record
from stella_bundle.evidence.writer import ChunkWriter, WriterConfig
from stella_bundle.formats.roles import ROLES
from stella_bundle.formats.seal import CollectorInfo
from stella_bundle.formats.trust_root import TrustRoot
from stella_bundle.functionmap.generate import GenerateOptions, generate_function_map

SBOM = {
    "bomFormat": "CycloneDX",
    "specVersion": "1.6",
    "version": 1,
    "components": [
        {
            "type": "library",
            "name": "libssl3",
            "version": "3.0.11-1~deb12u2",
            "purl": "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64",
        }
    ],
}


# CPU seconds (user + sys) of each labelled command, its worker processes included: on a
# machine shared with other jobs the wall-clock ratios move with their load, these do not.
CPU_SECONDS: dict[str, list[float]] = {}


def run(
    command: list[str], cwd: Path | None = None, label: str | None = None
) -> tuple[float, int, int]:
    """(seconds, peak RSS in MiB, exit code) of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if label is not None:  # the child's own usage includes its reaped children's
        CPU_SECONDS.setdefault(label, []).append(usage.ru_utime + usage.ru_stime)
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        stderr = process.stderr.read() if process.stderr else ""
        raise SystemExit(f"{' '.join(command)} failed ({code}): {stderr[-2000:]}")
    return elapsed, usage.ru_maxrss // 1024, code


def shell(script: str, cwd: Path, label: str) -> tuple[float, int]:
    elapsed, peak, _ = run(["bash", "-c", script], cwd, label)
    return elapsed, peak


def precompile(cache: Path) -> None:
    """stella's bytecode, compiled once into the scratch directory, as an installed stella has
    it: where PYTHONDONTWRITEBYTECODE is set (this machine's sessions set it), every command
    would otherwise compile its ~400 modules from source, a cost no user pays."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(cache)
    package = Path(stella_bundle.__file__).parent  # the tree the commands below run
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)


def make_inputs(root: Path, records: int) -> tuple[Path, Path, int]:
    keys = root / "keys"
    keys.mkdir()
    trust_root = TrustRoot(expires=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    for role in ROLES:
        trust_root.add_key(generate_key("ed25519", keys / role, None).public_key, [role])
    trust_root.save(root / "trust-root.json")
    sbom = root / "sbom.json"
    sbom.write_text(json.dumps(SBOM))
    generated = generate_function_map(
        GenerateOptions(sbom=sbom, service="bench", hot_functions=["SSL_*"])
    )
    inputs = root / "inputs"
    (inputs / "function-maps").mkdir(parents=True)
    fm = inputs / "function-maps" / "bench-function-map.json"
    fm.write_bytes(canonical_bytes(generated.statement))
    sign_to_file(
        generated.statement,
        [load_signer(keys / "function-map.key")],
        fm.with_name("bench-function-map.dsse.json"),
    )
    nodes = generated.function_map.nodes()
    writer = ChunkWriter.open(
        inputs / "evidence",
        "bench-host",
        load_signer(keys / "collector.key"),
        WriterConfig(),
        CollectorInfo("bench", "bench-host", None, "bench", None),
    )

    def observed_at(index: int) -> str:  # 2026-11-21 plus 37 us per record
        seconds, micro = divmod(index * 37, 1_000_000)
        minutes, second = divmod(seconds, 60)
        hours, minute = divmod(minutes, 60)
        return f"2026-11-{21 + hours // 24}T{hours % 24:02d}:{minute:02d}:{second:02d}.{micro:06d}Z"

    def record(index: int) -> dict[str, Any]:
        node = nodes[index * 7 % len(nodes)]
        return {
            "node_hash": node.node_hash,
            "function_name": node.symbol,
            "purl": node.purl,
            "probe_type": "uprobe",
            "observed_at": observed_at(index),
            "pid": 4000 + index % 40,
            "comm": "nginx",
            "binary_path": "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            "build_id": "3f1a9c0e5b7d2a4c6e8f0a1b3c5d7e9f1a2b3c4d",
            "kind": "function",
        }

    # Each record's canonical line (sorted keys) assembled from its node's encoded parts and
    # added a run at a time (append_encoded_run): the writer's per-record validation, strftime
    # and a json.dumps for the size took most of this bench's set-up; each run's first line is
    # checked against the writer's own encoding.
    parts = [
        (
            f'"function_name":{json.dumps(node.symbol)},"kind":"function",'
            f'"node_hash":{json.dumps(node.node_hash)},"observed_at":"',
            f',"probe_type":"uprobe","purl":{json.dumps(node.purl)}}}',
        )
        for node in nodes
    ]
    head = (
        '{"binary_path":"/usr/lib/x86_64-linux-gnu/libssl.so.3",'
        '"build_id":"3f1a9c0e5b7d2a4c6e8f0a1b3c5d7e9f1a2b3c4d","comm":"nginx",'
    )
    uncompressed = 0
    with writer:
        for first in range(0, records, 1000):
            numbers = range(first, min(first + 1000, records))
            stamps = [observed_at(index) for index in numbers]
            lines = []
            for index, stamp in zip(numbers, stamps, strict=True):
                middle, tail = parts[index * 7 % len(nodes)]
                lines.append(f'{head}{middle}{stamp}","pid":{4000 + index % 40}{tail}')
            if lines[0].encode() != encode_record(record(first)):
                raise SystemExit(f"bench/bundle.py: record {first} is not the writer's encoding")
            text = "\n".join(lines).encode()
            uncompressed += len(text) + 1
            writer.append_encoded_run(text, "\n".join(stamps), len(lines), stamps[0], stamps[-1])
    return inputs, fm.with_name("bench-function-map.dsse.json"), uncompressed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved rounds; each figure is the median"
    )
    args = parser.parse_args()
    stella = [sys.executable, "-m", "stella_bundle"]
    with tempfile.TemporaryDirectory(prefix="bench-bundle-") as scratch:
        root = Path(scratch)
        print(f"generating {args.records} records through ChunkWriter …", flush=True)
        inputs, fm, uncompressed = make_inputs(root, args.records)
        precompile(root / "pycache")
        evidence_bytes = sum(
            p.stat().st_size for p in (inputs / "evidence").rglob("*") if p.is_file()
        )
        bundle = root / "bench.stella.bundle.tgz"
        load_before = os.getloadavg()
        builds: list[float] = []
        tars: list[float] = []
        verifies: list[float] = []
        peers: list[float] = []
        startups: list[float] = []
        build_mb = tar_mb = verify_mb = code = 0
        # One round runs every command once, so a change of the machine's load falls on all
        # of them; the medians over rounds are what is compared.
        for _round in range(args.repeats):
            bundle.unlink(missing_ok=True)
            build_s, peak, _ = run(
                [*stella, "bundle", "build", "--function-map", str(fm), "--evidence",
                 str(inputs / "evidence"), "--key", str(root / "keys" / "builder.key"),
                 "--output", str(bundle)], label="build"
            )  # fmt: skip
            builds.append(build_s)
            build_mb = max(build_mb, peak)
            same_files = root / "same-files"
            same_files.mkdir()
            subprocess.run(["tar", "-xzf", str(bundle), "-C", str(same_files)], check=True)
            tar_s, peak = shell("tar -czf ../peer.tgz .", same_files, "tar")
            tars.append(tar_s)
            tar_mb = max(tar_mb, peak)
            shutil.rmtree(same_files)
            (root / "peer.tgz").unlink()
            startups.append(run([*stella, "--version"], label="startup")[0])
            verify_s, peak, code = run(
                [*stella, "bundle", "verify", str(bundle), "--trust-root",
                 str(root / "trust-root.json"), "--output-dir", str(root / "report")],
                label="verify",
            )  # fmt: skip
            verifies.append(verify_s)
            verify_mb = max(verify_mb, peak)
            extract = root / "extract"
            extract.mkdir()
            peer_s, _peer_mb = shell(
                f"tar -xzf {bundle} && find . -type f -print0 | xargs -0 sha256sum > /dev/null",
                extract,
                "peer",
            )
            peers.append(peer_s)
            shutil.rmtree(extract)
        build_s, tar_s = statistics.median(builds), statistics.median(tars)
        verify_s, peer_s = statistics.median(verifies), statistics.median(peers)
        startup_s = statistics.median(startups)
        build_ratio = statistics.median(b / t for b, t in zip(builds, tars, strict=True))
        verify_ratio = statistics.median(p / v for p, v in zip(peers, verifies, strict=True))
        size = bundle.stat().st_size
        mb = 1024 * 1024
        print(f"evidence: {args.records} records, {uncompressed / mb:.0f} MiB uncompressed, "
              f"{evidence_bytes / mb:.1f} MiB of chunks and seals; bundle {size / mb:.1f} MiB; "
              f"medians of {args.repeats} interleaved rounds")  # fmt: skip
        print(f"build : stella {build_s:6.2f} s (peak {build_mb} MiB) | tar -czf {tar_s:6.2f} s "
              f"(peak {tar_mb} MiB) | ratio {build_ratio:.2f}x (target <= 1.0x)")  # fmt: skip
        print(f"verify: stella {verify_s:6.2f} s (peak {verify_mb} MiB, exit {code}) | "
              f"tar -xzf + sha256sum {peer_s:6.2f} s | throughput ratio {verify_ratio:.2f}x "
              f"(target >= 1.0x)")  # fmt: skip
        print(f"rounds: build/tar {' '.join(f'{b / t:.2f}' for b, t in zip(builds, tars, strict=True))}; "
              f"verify throughput {' '.join(f'{p / v:.2f}' for p, v in zip(peers, verifies, strict=True))}")  # fmt: skip
        print(f"verify: {uncompressed / mb / verify_s:.1f} MiB/s of uncompressed records, "
              f"{args.records / verify_s:,.0f} records/s (includes {startup_s:.2f} s of CLI "
              "start-up)")  # fmt: skip
        print(f"peak memory: build {build_mb} MiB, verify {verify_mb} MiB (target < 200 MiB)")
        cpu = {label: statistics.median(values) for label, values in CPU_SECONDS.items()}
        print(f"CPU seconds (user + sys, workers included; medians): build {cpu['build']:.2f} | "
              f"tar -czf {cpu['tar']:.2f} | ratio {cpu['build'] / cpu['tar']:.2f}x; verify "
              f"{cpu['verify']:.2f} | tar -xzf + sha256sum {cpu['peer']:.2f} | ratio "
              f"{cpu['peer'] / cpu['verify']:.2f}x; stella --version {cpu['startup']:.2f}")  # fmt: skip
        print("load average (1, 5, 15 min) at the start: "
              f"{' '.join(f'{x:.2f}' for x in load_before)}; at the end: "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
