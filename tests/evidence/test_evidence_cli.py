"""The CLI: import, verify-chain output, inspect, status; errors are one line with exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evidence_support import make_record

from stella_bundle.evidence.layout import chunk_name, seal_name


def _ndjson(path: Path, count: int) -> Path:
    path.write_text("".join(json.dumps(make_record(i)) + "\n" for i in range(count)))
    return path


def test_import_then_verify(tmp_path: Path, test_keys: Any, run_cli: Any) -> None:
    source = _ndjson(tmp_path / "replay.ndjson", 300)
    evidence = tmp_path / "evidence"
    result = run_cli(
        "observations",
        "import",
        source,
        "--target",
        evidence,
        "--key",
        test_keys.private("collector"),
        "--max-records",
        "120",
    )
    assert result.exit_code == 0, result.stderr
    chains = list(evidence.iterdir())
    assert len(chains) == 1 and chains[0].name.startswith("import-")
    verdict = run_cli(
        "signals",
        "verify-chain",
        evidence,
        "--trust-root",
        test_keys.trust_root,
        "--format",
        "json",
    )
    assert verdict.exit_code == 0
    chain = json.loads(verdict.stdout)["chains"][0]
    assert chain["records"] == 300 and chain["chunks"] == 3 and chain["final_seal"] is True
    assert chain["chunk_details"][0]["signature"] == "verified"
    # The same file again into the same chain is refused.
    twice = run_cli(
        "observations",
        "import",
        source,
        "--target",
        evidence,
        "--key",
        test_keys.private("collector"),
    )
    assert twice.exit_code == 2 and "already" in twice.stderr


def test_import_refuses_a_bad_record_and_writes_nothing(
    tmp_path: Path, test_keys: Any, run_cli: Any
) -> None:
    source = _ndjson(tmp_path / "bad.ndjson", 10)
    lines = source.read_text().splitlines()
    lines[6] = lines[6].replace('"uprobe"', '"laser"')
    source.write_text("\n".join(lines) + "\n")
    result = run_cli(
        "observations",
        "import",
        source,
        "--target",
        tmp_path / "ev",
        "--key",
        test_keys.private("collector"),
    )
    assert result.exit_code == 2
    assert (
        f"{source}:7: field 'probe_type'" in result.stderr and len(result.stderr.splitlines()) == 1
    )
    assert not (tmp_path / "ev").exists()


def test_import_needs_a_key(tmp_path: Path, run_cli: Any) -> None:
    result = run_cli(
        "observations", "import", _ndjson(tmp_path / "a.ndjson", 1), "--target", tmp_path
    )
    assert result.exit_code == 2 and "signing key" in result.stderr


def test_verify_chain_on_a_directory_without_chains(tmp_path: Path, run_cli: Any) -> None:
    result = run_cli("signals", "verify-chain", tmp_path)
    assert result.exit_code == 2 and "no evidence chain" in result.stderr


def test_table_output_lists_chunks_and_findings(
    build_chain: Any, tmp_path: Path, test_keys: Any, run_cli: Any
) -> None:
    chain = build_chain(tmp_path)
    (chain / seal_name(6)).unlink()
    (chain / chunk_name(6)).unlink()
    result = run_cli("signals", "verify-chain", tmp_path, "--trust-root", test_keys.trust_root)
    assert result.exit_code == 1
    assert (
        "FAILED" in result.stdout
        and "no_final_seal" in result.stdout
        and "signatures verified" in result.stdout
    )
    accepted = run_cli(
        "signals", "verify-chain", chain, "--trust-root", test_keys.trust_root, "--allow-open"
    )
    assert accepted.exit_code == 0


def test_inspect_by_file_sequence_and_digest(
    build_chain: Any, tmp_path: Path, run_cli: Any
) -> None:
    chain = build_chain(tmp_path)
    by_file = run_cli("signals", "inspect", chain / chunk_name(2), "--format", "json")
    assert by_file.exit_code == 0
    document = json.loads(by_file.stdout)
    assert document["total_records"] == 20 and document["records"][0]["function_name"] == "r_20"
    assert document["seal"]["predicate"]["sequence"] == 2
    by_sequence = run_cli("signals", "inspect", "3", "--chain", chain, "--limit", "5")
    assert by_sequence.exit_code == 0 and "5 of 20 records shown" in by_sequence.stdout
    digest = document["seal"]["subject"]["sha256"]
    by_digest = run_cli(
        "signals", "inspect", f"sha256:{digest}", "--chain", chain, "--format", "json"
    )
    assert json.loads(by_digest.stdout)["seal"]["predicate"]["sequence"] == 2
    missing = run_cli("signals", "inspect", "sha256:" + "0" * 64, "--chain", chain)
    assert missing.exit_code == 2


def test_status_of_a_live_chain(tmp_path: Path, test_keys: Any, run_cli: Any) -> None:
    from evidence_support import COLLECTOR

    from stella_bundle.evidence.writer import ChunkWriter, WriterConfig

    writer = ChunkWriter.open(
        tmp_path, "live", test_keys.signer("collector"), WriterConfig(max_records=50), COLLECTOR
    )
    for index in range(120):
        writer.append(make_record(index))
    writer.add_loss(ring_buffer_dropped=7)
    writer.flush()
    result = run_cli("signals", "status", tmp_path, "--format", "json")
    assert result.exit_code == 0
    status = json.loads(result.stdout)["chains"][0]
    assert status["head"]["sequence"] == 2 and status["head"]["final"] is False
    assert status["open_chunk"] == {
        "sequence": 3,
        "bytes": status["open_chunk"]["bytes"],
        "records": 20,
    }
    assert status["records"] == 100 and status["records_per_second"] > 0
    table = run_cli("signals", "status", tmp_path / "live")
    assert "open chunk 3: 20 records" in table.stdout
    writer.close()
    status = json.loads(run_cli("signals", "status", tmp_path, "--format", "json").stdout)[
        "chains"
    ][0]
    assert (
        status["events_lost"] == 7
        and status["open_chunk"] is None
        and status["head"]["final"] is True
    )


def test_a_second_writer_on_the_same_chain_is_refused(tmp_path: Path, test_keys: Any) -> None:
    import pytest
    from evidence_support import COLLECTOR

    from stella_bundle.errors import ChainBusyError
    from stella_bundle.evidence.writer import ChunkWriter

    signer = test_keys.signer("collector")
    with (
        ChunkWriter.open(tmp_path, "one", signer, None, COLLECTOR),
        pytest.raises(ChainBusyError),
    ):
        ChunkWriter.open(tmp_path, "one", signer, None, COLLECTOR)
