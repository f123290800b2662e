"""`stella signals start` end to end: a signed chain that verifies, drops in seals, coverage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from collector_support import KNOWN_FILE, WORKLOAD_PURL, start_workload, workload_nodes

from stella_bundle.attest.statement import FUNCTION_MAP_PREDICATE, make_statement
from stella_bundle.collector.session import CollectorConfig
from stella_bundle.evidence.chain import verify_chain
from stella_bundle.evidence.config import WriterConfig
from stella_bundle.evidence.reader import iter_chain_records
from stella_bundle.evidence.writer import ChunkWriter
from stella_bundle.formats.function_map import ExpectedNode
from stella_bundle.formats.seal import CollectorInfo

pytestmark = pytest.mark.ebpf


def write_function_map(path: Path, workload: Path) -> list[ExpectedNode]:
    """A function map for the workload; the path holding stella_work_never is optional."""
    nodes = workload_nodes(workload)
    by_symbol = {n.symbol: n for n in nodes}

    def path_of(
        path_id: str, tag: str, symbols: list[str], optional: bool = False
    ) -> dict[str, Any]:
        return {
            "path_id": path_id,
            "tag": tag,
            "priority": 1,
            "optional": optional,
            "nodes": [by_symbol[s].to_dict() for s in symbols],
        }

    predicate = {
        "service": "stella-workload",
        "build_id": "test",
        "generated_at": "2026-01-01T00:00:00.000000Z",
        "sbom": {"digest": "sha256:" + "0" * 64, "format": "CycloneDX", "spec_version": "1.6"},
        "coverage": {
            "min_observation_rate": 0.95,
            "window_seconds": 1800,
            "fail_on_unexpected": True,
            "tag_min_rates": {},
        },
        "hot_functions": ["stella_work_*"],
        "expected_paths": [
            path_of("main", "general", ["stella_work_parse", "stella_work_hot"]),
            path_of("crypto", "crypto", ["stella_work_parse", "EVP_Digest"]),
            path_of("net", "net", ["connect", "inet_sock_set_state"]),
            path_of("file", "file", ["openat"]),
            path_of("never", "general", ["stella_work_never"], optional=True),
        ],
    }
    statement = make_statement(
        [{"name": "sbom.json", "digest": {"sha256": "0" * 64}}], FUNCTION_MAP_PREDICATE, predicate
    )
    path.write_text(json.dumps(statement))
    return nodes


def test_signals_start_writes_a_chain_that_verifies(
    ebpf: None, workload_bin: Path, tmp_path: Path, test_keys: Any, run_cli: Any
) -> None:
    fm = tmp_path / "fm.json"
    nodes = write_function_map(fm, workload_bin)
    evidence = tmp_path / "evidence"
    work = start_workload(
        workload_bin, "--crypto", "--connect", "--open", KNOWN_FILE, "--calls", "1000"
    )
    collector = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stella_bundle",
            "signals",
            "start",
            "--function-map",
            str(fm),
            "--target",
            str(evidence),
            "--key",
            str(test_keys.private("collector")),
            "--pid",
            str(work.pid),
            "--chain-id",
            "workload",
            "--aggregation-window",
            "200ms",
            "--quiet",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert collector.stderr is not None
    banner = collector.stderr.readline()
    assert banner.startswith("collecting:"), banner + collector.stderr.read()
    work.go()
    import time

    time.sleep(0.8)
    collector.send_signal(signal.SIGTERM)
    out, err = collector.communicate(timeout=30)
    assert collector.returncode == 0, err
    assert "stopped:" in out

    chain = evidence / "workload"
    report = verify_chain(chain, test_keys.trust_root)
    assert report.passed, report.to_dict()
    assert report.final_seal
    records = list(iter_chain_records(chain))
    observed = {r["node_hash"] for r in records}
    for node in nodes:
        assert (node.node_hash in observed) == (node.symbol != "stella_work_never"), node.symbol
    for record in records:
        assert record["pid"] == work.pid and record["comm"] == "stella-workload"
        assert record["probe_type"] in ("uprobe", "tracepoint", "raw_tracepoint")
    seal = json.loads((chain / "0000000001.seal.dsse.json").read_text())
    assert seal["payloadType"] == "application/vnd.in-toto+json"

    result = run_cli(
        "function-map",
        "verify",
        "--function-map",
        str(fm),
        "--evidence",
        str(evidence),
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    verdict = json.loads(result.stdout)
    text = json.dumps(verdict)
    assert "stella_work_never" in text  # reported missing
    never_hash = next(n.node_hash for n in nodes if n.symbol == "stella_work_never")
    assert never_hash in text or "stella_work_never" in json.dumps(
        verdict.get("missing_symbols", [])
    )


def test_trace_flood_drops_land_in_a_seal_and_the_chain_report(
    collect_run: Any, tmp_path: Path, test_keys: Any
) -> None:
    info = CollectorInfo("test-collector", "host", None, "0", "0" * 64)
    writer = ChunkWriter.open(
        tmp_path, "flood", test_keys.signer("collector"), WriterConfig(), info
    )
    run = collect_run(
        "--calls", "40000", config=CollectorConfig(mode="trace"), ring_size=4096, sink=writer
    )
    assert run.collector.loss_totals["ring_buffer_dropped"] > 0
    report = verify_chain(tmp_path / "flood", test_keys.trust_root)
    assert report.passed, report.to_dict()
    assert report.loss.ring_buffer_dropped == run.collector.loss_totals["ring_buffer_dropped"]
    assert report.to_dict()  # serialisable for the verification report
    seals = sorted((tmp_path / "flood").glob("*.seal.dsse.json"))
    import base64

    losses = [
        json.loads(base64.b64decode(json.loads(s.read_text())["payload"]))["predicate"]["loss"]
        for s in seals
    ]
    assert sum(loss["ring_buffer_dropped"] for loss in losses) > 0


def test_start_refuses_a_tampered_probe_set_before_writing(
    ebpf: None, workload_bin: Path, tmp_path: Path, test_keys: Any, run_cli: Any
) -> None:
    import shutil

    from stella_bundle.collector.lockfile import PACKAGE_BPF_DIR

    fm = tmp_path / "fm.json"
    write_function_map(fm, workload_bin)
    probes = tmp_path / "probes"
    shutil.copytree(PACKAGE_BPF_DIR, probes)
    (probes / "uprobe_node.bpf.o").write_bytes(b"\x7fELF tampered")
    evidence = tmp_path / "evidence"
    result = run_cli(
        "signals",
        "start",
        "--function-map",
        fm,
        "--target",
        evidence,
        "--key",
        test_keys.private("collector"),
        "--probes-dir",
        probes,
        "--duration",
        "1",
        "--chain-id",
        "tampered",
        "--quiet",
    )
    assert result.exit_code == 1
    assert "does not match the lock" in result.stderr
    assert not list((evidence / "tampered").glob("*.seal.dsse.json"))
    _ = os, WORKLOAD_PURL
