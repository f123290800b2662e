"""Verifying observations against a function map: the matrix of issue 3, and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import zstandard

from stella_bundle.canonical import canonical_bytes
from stella_bundle.coverage import VerifyOptions, verify_files, verify_observations
from stella_bundle.coverage import engine as verify_module
from stella_bundle.errors import InputError
from stella_bundle.formats.function_map import FunctionMap
from stella_bundle.formats.node_hash import node_hash
from stella_bundle.functionmap.generate import GenerateOptions, generate_function_map
from stella_bundle.functionmap.load import load_function_map
from tests.functionmap.functionmap_helpers import (
    EPOCH,
    record,
    records_for,
    write_chain,
    write_ndjson,
)

HOT = ["openssl/SSL_read", "openssl/SSL_write", "net/connect", "file/openat"]


@pytest.fixture
def fm_file(debian_sbom: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    result = generate_function_map(
        GenerateOptions(sbom=debian_sbom, service="tls", hot_functions=HOT, optional=["file/*"])
    )
    path = tmp_path / "function-map.json"
    path.write_bytes(canonical_bytes(result.statement))
    return path


@pytest.fixture
def fmap(fm_file: Path) -> FunctionMap:
    return load_function_map(fm_file).function_map


def _sink(fmap: FunctionMap, symbol: str) -> Any:
    return next(p for p in fmap.expected_paths if p.sink.symbol == symbol)


def _verify(run_cli, fm_file: Path, obs: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    result = run_cli("function-map", "verify", "--function-map", fm_file, "--observations", obs,
                     "--format", "json", *extra)  # fmt: skip
    document = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.exit_code, document, result.stderr


def test_all_observed_is_verified(
    run_cli, fm_file: Path, fmap: FunctionMap, tmp_path: Path
) -> None:
    obs = write_ndjson(tmp_path / "obs.ndjson", records_for(fmap))
    code, report, _ = _verify(run_cli, fm_file, obs)
    assert code == 0 and report["verified"] is True
    assert report["observation_rate"] == 1.0 and report["target_rate"] == 0.95
    assert {p["status"] for p in report["per_path_breakdown"]} == {"observed"}
    assert report["missing_symbols"] == [] and report["unexpected_symbols"] == []
    assert report["confidence"] == 1.0
    table = run_cli("function-map", "verify", "--function-map", fm_file, "--observations", obs)
    assert table.exit_code == 0 and "VERIFIED" in table.stdout and "SSL_read" not in table.stderr


def test_missing_required_path_fails_and_is_named(
    run_cli, fm_file: Path, fmap: FunctionMap, tmp_path: Path
) -> None:
    obs = write_ndjson(
        tmp_path / "obs.ndjson", records_for(fmap, skip=lambda p: p.sink.symbol == "SSL_write")
    )
    code, report, _ = _verify(run_cli, fm_file, obs)
    assert code == 1 and report["verified"] is False
    missing = _sink(fmap, "SSL_write")
    assert [m["node_hash"] for m in report["missing_symbols"]] == [missing.sink.node_hash]
    assert report["missing_symbols"][0]["path_ids"] == [missing.path_id]
    entry = next(p for p in report["per_path_breakdown"] if p["path_id"] == missing.path_id)
    assert entry["status"] == "missing" and entry["nodes"][0]["observed"] is False
    assert report["observation_rate"] == pytest.approx(
        2 / 3
    )  # 3 required, the file path is optional
    assert report["per_tag"]["crypto"]["observed_paths"] == 1


def test_optional_paths_do_not_count(
    run_cli, fm_file: Path, fmap: FunctionMap, tmp_path: Path
) -> None:
    optional = _sink(fmap, "openat")
    assert optional.optional
    obs = write_ndjson(tmp_path / "obs.ndjson", records_for(fmap, skip=lambda p: p.optional))
    code, report, _ = _verify(run_cli, fm_file, obs)
    assert code == 0 and report["observation_rate"] == 1.0
    assert report["per_tag"]["file"]["optional_paths"] == 1
    assert report["missing_symbols"] == []


def test_partial_paths_and_per_tag_rates(debian_sbom: Path, tmp_path: Path) -> None:
    graph = tmp_path / "graph.json"
    app = "pkg:generic/tls-client@1.0"
    graph.write_text(json.dumps({
        "nodes": [{"id": "m", "purl": app, "symbol": "main"},
                  {"id": "r", "purl": component_purl_libssl(debian_sbom), "symbol": "SSL_read"}],
        "edges": [{"from": "m", "to": "r"}], "entrypoints": ["m"],
    }))  # fmt: skip

    def build(crypto_rate: float) -> FunctionMap:
        return generate_function_map(GenerateOptions(
            sbom=debian_sbom, service="s", static_analysis=graph, min_rate=0.5,
            hot_functions=["openssl/SSL_read", "openssl/SSL_write", "net/connect"],
            tag_rates={"crypto": crypto_rate},
        )).function_map  # fmt: skip

    fmap = build(1.0)
    chain = next(p for p in fmap.expected_paths if len(p.nodes) == 2)
    main, ssl_read = chain.nodes
    connect = _sink(fmap, "connect").sink
    # main observed, SSL_read not: the chain is partial.
    result = verify_observations(fmap, [record(main.node_hash, "main"), record(connect.node_hash)])
    breakdown = {p["path_id"]: p for p in result.per_path_breakdown}
    assert breakdown[chain.path_id]["status"] == "partial"
    assert breakdown[chain.path_id]["observed_nodes"] == 1
    assert not result.verified
    # Chain, SSL_read and connect observed, SSL_write not: overall 3/4 ≥ 0.5, crypto 2/3 < 1.0.
    seen = [record(main.node_hash), record(ssl_read.node_hash), record(connect.node_hash)]
    result = verify_observations(fmap, seen)
    assert result.observation_rate == 0.75
    assert result.per_tag["crypto"]["verified"] is False and result.per_tag["net"]["verified"]
    assert not result.verified and any("tag crypto" in f for f in result.failures)
    relaxed = verify_observations(build(0.6), seen)
    assert relaxed.verified and relaxed.per_tag["crypto"]["target_rate"] == 0.6


def component_purl_libssl(sbom: Path) -> str:
    from tests.functionmap.functionmap_helpers import component_purl

    return component_purl(sbom, "libssl3")


def test_window_ignores_observations_outside(
    run_cli, fm_file: Path, fmap: FunctionMap, tmp_path: Path
) -> None:
    late = _sink(fmap, "SSL_read").sink.node_hash
    records = [
        r if r["node_hash"] != late else {**r, "observed_at": "2026-01-23T05:00:00.000000Z"}
        for r in records_for(fmap)
    ]
    obs = write_ndjson(tmp_path / "obs.ndjson", records)
    code, report, _ = _verify(run_cli, fm_file, obs)
    assert code == 0
    code, report, _ = _verify(
        run_cli, fm_file, obs, "--from", "2026-01-23T00:00:00Z", "--to", "2026-01-23T01:00:00+00:00"
    )
    assert code == 1
    assert report["records"]["outside_window"] == 1
    assert [m["symbol"] for m in report["missing_symbols"]] == ["SSL_read"]
    assert report["window"] == {
        "from": "2026-01-23T00:00:00.000000Z",
        "to": "2026-01-23T01:00:00.000000Z",
    }


@pytest.mark.parametrize("fail", ["true", "false"])
def test_unexpected_symbols(
    run_cli, fm_file: Path, fmap: FunctionMap, tmp_path: Path, fail: str
) -> None:
    stray = node_hash("pkg:generic/evil@1", "exfiltrate")
    obs = write_ndjson(
        tmp_path / "obs.ndjson",
        [*records_for(fmap), record(stray, "exfiltrate", purl="pkg:generic/evil@1", count=3)],
    )
    code, report, _ = _verify(run_cli, fm_file, obs, "--fail-on-unexpected", fail)
    assert code == (1 if fail == "true" else 0)
    assert report["unexpected_symbols"][0]["function_name"] == "exfiltrate"
    assert report["unexpected_symbols"][0]["count"] == 3


def test_version_drift_and_normalisation_mismatch(
    run_cli, fm_file: Path, fmap: FunctionMap, tmp_path: Path
) -> None:
    read = _sink(fmap, "SSL_read").sink
    write = _sink(fmap, "SSL_write").sink
    drifted_purl = read.purl.replace("@3.", "@9.")
    assert drifted_purl != read.purl
    raw_name = "SSL_write@@OPENSSL_3.0.0"
    # A collector that hashed the raw versioned name instead of the normalised one.
    import hashlib

    wrong_hash = "sha256:" + hashlib.sha256(f"{write.purl}#{raw_name}".encode()).hexdigest()
    records = [
        r for r in records_for(fmap) if r["node_hash"] not in (read.node_hash, write.node_hash)
    ]
    records += [
        record(node_hash(drifted_purl, "SSL_read"), "SSL_read", purl=drifted_purl),
        record(wrong_hash, raw_name, purl=write.purl),
    ]
    obs = write_ndjson(tmp_path / "obs.ndjson", records)
    code, report, _ = _verify(run_cli, fm_file, obs, "--fail-on-unexpected", "false")
    assert code == 1
    kinds = {d["expected"]["symbol"]: d for d in report["diagnoses"]}
    assert kinds["SSL_read"]["diagnosis"] == "version drift"
    assert kinds["SSL_read"]["observed"]["purl"] == drifted_purl
    assert kinds["SSL_read"]["expected"]["purl"] == read.purl
    assert kinds["SSL_write"]["diagnosis"] == "normalisation mismatch"
    assert kinds["SSL_write"]["observed"]["function_name"] == raw_name
    reasons = {m["symbol"]: m["reason"] for m in report["missing_symbols"]}
    assert reasons == {"SSL_read": "version drift", "SSL_write": "normalisation mismatch"}
    table = run_cli("function-map", "verify", "--function-map", fm_file, "--observations", obs)
    assert "version drift" in table.stdout and "normalisation mismatch" in table.stdout


def test_zst_and_evidence_directory(
    run_cli, fm_file: Path, fmap: FunctionMap, tmp_path: Path, test_keys
) -> None:
    plain = write_ndjson(tmp_path / "obs.ndjson", records_for(fmap))
    compressed = tmp_path / "obs.ndjson.zst"
    compressed.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    code, report, _ = _verify(run_cli, fm_file, compressed)
    assert code == 0 and report["records"]["read"] == len(records_for(fmap))
    records = records_for(fmap)
    chain = write_chain(tmp_path / "evidence", "tls-host1", records, test_keys.signer("collector"))
    assert len(list(chain.glob("*.ndjson.zst"))) >= 2
    result = run_cli("function-map", "verify", "--function-map", fm_file,
                     "--evidence", tmp_path / "evidence", "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["records"]["read"] == len(records)
    # A chunk that no longer matches its seal is refused, naming the chunk.
    victim = sorted(chain.glob("*.ndjson.zst"))[0]
    victim.write_bytes(zstandard.ZstdCompressor().compress(b"{}\n"))
    tampered = run_cli("function-map", "verify", "--function-map", fm_file,
                       "--evidence", tmp_path / "evidence")  # fmt: skip
    assert tampered.exit_code != 0 and victim.name in tampered.stderr


def test_probe_type_confidence_and_weights(fmap: FunctionMap) -> None:
    records = []
    for path in fmap.expected_paths:
        probe = {"SSL_read": "uprobe", "SSL_write": "kprobe", "connect": None}.get(
            path.sink.symbol, "fentry"
        )
        records.append(record(path.sink.node_hash, path.sink.symbol, probe_type=probe))
    result = verify_observations(fmap, records)
    per_path = {p["nodes"][0]["symbol"]: p["confidence"] for p in result.per_path_breakdown}
    assert per_path == {"SSL_read": 1.0, "SSL_write": 0.7, "connect": 0.5, "openat": 0.9}
    assert result.to_dict()["confidence"] == pytest.approx((1.0 + 0.7 + 0.5) / 3, abs=1e-6)
    custom = verify_observations(fmap, records, VerifyOptions(probe_weights={"kprobe": 0.2}))
    assert {p["nodes"][0]["symbol"]: p["confidence"] for p in custom.per_path_breakdown}[
        "SSL_write"
    ] == 0.2
    unknown = next(p for p in result.per_path_breakdown if p["nodes"][0]["symbol"] == "connect")
    assert unknown["nodes"][0]["observed_probe_types"] == ["unknown"]


def test_result_embeds_in_verification_report_schema(
    fm_file: Path, fmap: FunctionMap, tmp_path: Path
) -> None:
    from stella_bundle.schema import validate_document

    obs = write_ndjson(tmp_path / "obs.ndjson", records_for(fmap)[1:])
    loaded = load_function_map(fm_file)
    result = verify_files(loaded, [obs], VerifyOptions(window_from=None))
    assert result.function_map["digest"] == loaded.digest
    report = {
        "verifier": {"id": "https://stella.ops/verifier/stella-bundle", "version": "0.1.0"},
        "time_verified": "2026-01-23T02:00:00.000000Z",
        "resource_uri": "tls",
        "policy": {"digest": {"sha256": loaded.digest.split(":")[1]}},
        "input_attestations": [],
        "verification_result": "PASSED" if result.verified else "FAILED",
        "evidence": [],
        **result.to_dict(),
    }
    validate_document("verification-report", report)
    canonical_bytes(report)  # signable as it is


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"node_hash": "sha256:' + b"a" * 64 + b'", "function_name": ', "malformed NDJSON"),
        (b'{"function_name":"f","node_hash":"sha256:' + b"a" * 64 + b'","probe_type":"uprobe"}',
         "field 'observed_at': required field is missing"),
        (b'{"function_name":"f","node_hash":"sha256:' + b"a" * 64
         + b'","observed_at":"2026-01-23T00:00:00.000000Z","probe_type":"laser"}',
         "field 'probe_type': unknown probe type 'laser'"),
        (b'{"function_name":"f","node_hash":"sha256:' + b"a" * 64
         + b'","observed_at":"2026-02-30T00:00:00.000000Z","probe_type":"uprobe"}',
         "field 'observed_at'"),
    ],
)  # fmt: skip
def test_bad_records_name_file_and_line(
    run_cli, fm_file: Path, fmap: FunctionMap, tmp_path: Path, line: bytes, expected: str
) -> None:
    good = write_ndjson(tmp_path / "obs.ndjson", records_for(fmap))
    data = good.read_bytes().splitlines(keepends=True)
    data.insert(2, line + b"\n")
    good.write_bytes(b"".join(data))
    code, _, stderr = _verify(run_cli, fm_file, good)
    assert code == 2
    assert f"{good}:3: " in stderr and expected in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_bad_line_number_in_a_large_split_file(
    fmap: FunctionMap, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify_module, "PARALLEL_MIN_BYTES", 1024)
    records = records_for(fmap) * 200
    path = write_ndjson(tmp_path / "big.ndjson", records)
    ok = verify_files(fmap, [path], VerifyOptions(workers=2))
    assert ok.records["read"] == len(records) and ok.verified
    lines = path.read_bytes().splitlines(keepends=True)
    bad_line = len(lines) - 5
    lines[bad_line - 1] = b"{oops\n"
    path.write_bytes(b"".join(lines))
    with pytest.raises(Exception) as caught:
        verify_files(fmap, [path], VerifyOptions(workers=2))
    assert f"{path}:{bad_line}: malformed NDJSON" in str(caught.value)


def test_signed_map_requires_role_signature(
    run_cli, fm_file: Path, fmap: FunctionMap, tmp_path: Path, test_keys
) -> None:
    obs = write_ndjson(tmp_path / "obs.ndjson", records_for(fmap))
    unsigned = run_cli("function-map", "verify", "--function-map", fm_file, "--observations", obs,
                       "--trust-root", test_keys.trust_root)  # fmt: skip
    assert unsigned.exit_code == 1 and "not signed" in unsigned.stderr


def test_verify_is_offline(
    no_network, netns_cli, fm_file: Path, fmap: FunctionMap, tmp_path: Path, run_cli
) -> None:
    obs = write_ndjson(tmp_path / "obs.ndjson", records_for(fmap))
    assert (
        run_cli(
            "function-map", "verify", "--function-map", fm_file, "--observations", obs
        ).exit_code
        == 0
    )
    isolated = netns_cli("function-map", "verify", "--function-map", fm_file, "--observations", obs,
                         "--format", "json")  # fmt: skip
    assert isolated.exit_code == 0, isolated.stderr
    assert json.loads(isolated.stdout)["verified"] is True


def test_many_chunks_in_parallel_match_sequential(
    fmap: FunctionMap, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify_module, "PARALLEL_MIN_BYTES", 64)
    records = records_for(fmap)
    chain = tmp_path / "evidence" / "c1"
    chain.mkdir(parents=True)
    for sequence in range(1, 6):
        data = b"".join(canonical_bytes({**r, "count": sequence}) + b"\n" for r in records)
        (chain / f"{sequence:010d}.ndjson.zst").write_bytes(
            zstandard.ZstdCompressor().compress(data)
        )
    from stella_bundle.coverage.inputs import evidence_chunk_paths

    paths = evidence_chunk_paths(tmp_path / "evidence")
    parallel = verify_files(fmap, paths, VerifyOptions(workers=2)).to_dict()
    sequential = verify_files(fmap, paths, VerifyOptions(workers=1)).to_dict()
    assert parallel == sequential
    assert parallel["per_path_breakdown"][0]["nodes"][0]["count"] == 15


def test_split_scan_matches_sequential_and_names_lines_in_either_part(
    fmap: FunctionMap, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This process scans the first part of a split file while a worker scans the rest: the
    same result as one sequential scan, and a bad line in either part is named exactly."""
    monkeypatch.setattr(verify_module, "PARALLEL_MIN_BYTES", 1024)
    stray = {**records_for(fmap)[0], "function_name": "stray", "node_hash": "sha256:" + "e" * 64}
    records = records_for(fmap) * 100 + [stray] + records_for(fmap) * 100
    path = write_ndjson(tmp_path / "big.ndjson", records)
    other = write_ndjson(tmp_path / "other.ndjson", records_for(fmap))
    for paths in ([path], [path, other], [other, path]):
        parallel = verify_files(fmap, paths, VerifyOptions(workers=2)).to_dict()
        sequential = verify_files(fmap, paths, VerifyOptions(workers=1)).to_dict()
        assert parallel == sequential
    lines = path.read_bytes().splitlines(keepends=True)
    for bad_line in (3, len(lines) // 2 - 2, len(lines) // 2 + 2, len(lines) - 1):
        broken = lines.copy()
        broken[bad_line - 1] = b"{oops\n"
        path.write_bytes(b"".join(broken))
        with pytest.raises(InputError) as caught:
            verify_files(fmap, [path], VerifyOptions(workers=2))
        assert f"{path}:{bad_line}: malformed NDJSON" in str(caught.value)
