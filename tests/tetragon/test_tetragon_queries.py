"""Hot symbols (equal to a direct count over the input), the timeline (order, correlation with
purl and build artifact), standard input, and the null service when the bridge is off."""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tetragon_support import (
    APP,
    APP_PURL,
    LIBSSL,
    LIBSSL_PURL,
    TetragonProto,
    exec_event,
    kprobe,
    shop_map,
    to_line,
    uprobe,
)

from stella_bundle.formats.node_hash import canonical_purl

SYMBOLS = ((APP, "checkout"), (LIBSSL, "SSL_write"), (LIBSSL, "SSL_read"))
IMAGE_B = "docker.io/library/web@sha256:" + "ef" * 32


def random_export(pb: TetragonProto, count: int, seed: int) -> tuple[list[bytes], list[Any]]:
    rng = random.Random(seed)
    lines = []
    truth = []
    for _ in range(count):
        path, symbol = rng.choice(SYMBOLS)
        second = rng.randrange(0, 600)
        micro = rng.randrange(0, 1_000_000)
        time = f"2026-01-23T00:{second // 60:02d}:{second % 60:02d}.{micro:06d}Z"
        image = rng.choice(("docker.io/library/web@sha256:" + "cd" * 32, IMAGE_B))
        lines.append(to_line(uprobe(pb, path, symbol, time=time, image_id=image)))
        truth.append((path, symbol, time, image))
    return lines, truth


@pytest.fixture
def evidence(tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, run_cli: Any) -> Any:
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    lines, truth = random_export(tetragon_pb, 300, seed=12)
    export = tmp_path / "t.log"
    export.write_bytes(b"".join(lines))
    target = tmp_path / "evidence"
    result = run_cli(
        "tetragon", "ingest", export, "--function-map", fm_path, "--target", target,
        "--key", test_keys.private("collector"), "--max-records", "64",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return target, truth


def test_hot_symbols_equal_a_direct_count(evidence: Any, run_cli: Any) -> None:
    target, truth = evidence
    result = run_cli(
        "tetragon", "hot-symbols", "--evidence", target, "--window", "300", "--format", "json"
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    purl = {APP: canonical_purl(APP_PURL), LIBSSL: canonical_purl(LIBSSL_PURL)}
    direct = Counter((purl[p], s) for p, s, _, _ in truth)
    assert {(r["purl"], r["symbol"]): r["count"] for r in report["symbols"]} == dict(direct)
    counts = [r["count"] for r in report["symbols"]]
    assert counts == sorted(counts, reverse=True)
    per_window = Counter(
        (
            "2026-01-23T00:00:00.000000Z"
            if t < "2026-01-23T00:05"
            else "2026-01-23T00:05:00.000000Z",
            s,
        )
        for _, s, t, _ in truth
    )
    assert {(w["window_start"], w["symbol"]): w["count"] for w in report["windows"]} == dict(
        per_window
    )
    first = min(t for _, s, t, _ in truth if s == "checkout")
    (checkout,) = [r for r in report["symbols"] if r["symbol"] == "checkout"]
    assert checkout["first_seen"] == first


def test_timeline_is_chronological_and_correlated(evidence: Any, run_cli: Any) -> None:
    target, truth = evidence
    result = run_cli(
        "observations", "timeline", "--evidence", target, "--image",
        "sha256:" + "ef" * 32, "--from", "2026-01-23T00:02:00Z", "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    events = json.loads(result.stdout)["events"]
    expected = sorted(
        t for _, _, t, image in truth if image == IMAGE_B and t >= "2026-01-23T00:02:00"
    )
    assert [e["observed_at"] for e in events] == expected
    for entry in events:
        assert entry["image_digest"] == "sha256:" + "ef" * 32
        assert entry["purl"] in (canonical_purl(APP_PURL), canonical_purl(LIBSSL_PURL))
        if entry["symbol"] == "checkout":
            assert entry["build_id"] == "aa" * 20
            assert entry["binary_path"] == APP
    by_purl = run_cli(
        "observations", "timeline", "--evidence", target, "--purl", "pkg:generic/shop",
        "--format", "json",
    )  # fmt: skip
    symbols = {e["symbol"] for e in json.loads(by_purl.stdout)["events"]}
    assert symbols == {"checkout"}


def test_stdin_like_tetra_getevents(
    tmp_path: Path,
    tetragon_pb: TetragonProto,
    test_keys: Any,
    run_cli: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    data = to_line(exec_event(tetragon_pb)) + to_line(kprobe(tetragon_pb, "__x64_sys_openat"))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    result = run_cli(
        "tetragon", "ingest", "--stdin", "--function-map", fm_path, "--target",
        tmp_path / "e", "--key", test_keys.private("collector"), "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["records"] == 2
    from stella_bundle.evidence.reader import iter_chain_records

    (chain,) = (tmp_path / "e").iterdir()
    assert chain.name == "tetragon-node-1"
    symbols = [r["function_name"] for r in iter_chain_records(chain)]
    assert symbols == ["execve", "openat"]  # __x64_sys_openat is the map's openat node


def test_null_service_when_disabled(
    evidence: Any, tmp_path: Path, test_keys: Any, run_cli: Any
) -> None:
    target, _ = evidence
    config = tmp_path / "off.yaml"
    config.write_text("tetragon:\n  enabled: false\n")
    hot = run_cli(
        "tetragon", "hot-symbols", "--evidence", target, "--config", config, "--format", "json"
    )
    assert hot.exit_code == 0 and json.loads(hot.stdout) == {"symbols": []}
    export = tmp_path / "x.log"
    export.write_text("{not even json\n")
    ingest = run_cli(
        "tetragon", "ingest", export, "--target", tmp_path / "off", "--key",
        test_keys.private("collector"), "--config", config, "--format", "json",
    )  # fmt: skip
    assert ingest.exit_code == 0
    assert json.loads(ingest.stdout) == {"enabled": False, "records": 0}
    assert not (tmp_path / "off").exists()


def test_runtime_trace_service_persists_posted_lines_and_queries_them(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any
) -> None:
    """What POST /api/v1/runtime-traces and the runtime GET endpoints will call."""
    from stella_bundle.functionmap.load import load_function_map
    from stella_bundle.tetragon.config import TetragonConfig
    from stella_bundle.tetragon.nodes import NodeIndex
    from stella_bundle.tetragon.service import runtime_trace_service

    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    nodes = NodeIndex(load_function_map(fm_path).function_map)
    lines, truth = random_export(tetragon_pb, 40, seed=3)
    body = b"".join(lines) + b"{broken\n"
    service = runtime_trace_service(tmp_path / "evidence", TetragonConfig(), nodes)
    assert service.timeline().events == () and service.hot_symbols().symbols == ()  # nothing yet
    result = service.ingest_lines(body, test_keys.signer("collector"))
    assert (result.records, dict(result.dropped)) == (40, {"line:malformed_json": 1})
    assert "<request>:41: line:malformed_json" in result.problems
    events = service.timeline().events
    assert [e["observed_at"] for e in events] == sorted(t for _, _, t, _ in truth)
    assert sum(r.count for r in service.hot_symbols().symbols) == 40

    off = runtime_trace_service(tmp_path / "evidence", TetragonConfig(enabled=False), nodes)
    assert off.timeline().events == () and off.hot_symbols().symbols == ()
    assert off.ingest_lines(body, test_keys.signer("collector")).records == 0
    assert len(service.timeline().events) == 40  # nothing was added while off
