"""`stella observations query`: filters and the per-symbol summary."""

from __future__ import annotations

import json
from pathlib import Path

from stella_bundle.formats.node_hash import node_hash
from tests.functionmap.functionmap_helpers import record, write_ndjson

SSL = node_hash("pkg:deb/debian/libssl3@3.0.19", "SSL_read")
CONNECT = node_hash("pkg:deb/debian/libc6@2.36", "connect")


def _observations(tmp_path: Path) -> Path:
    return write_ndjson(
        tmp_path / "obs.ndjson",
        [
            record(SSL, "SSL_read", observed_at="2026-01-23T00:00:01.000000Z", container_id="c" * 64,
                   pod_name="checkout-7d9f-abc", probe_type="uprobe"),
            record(SSL, "SSL_read@@OPENSSL_3.0.0", observed_at="2026-01-23T00:00:05.000000Z", count=4,
                   first_observed_at="2026-01-23T00:00:02.000000Z",
                   last_observed_at="2026-01-23T00:00:05.000000Z", container_id="d" * 64,
                   pod_name="checkout-7d9f-xyz", probe_type="uretprobe"),
            record(CONNECT, "connect", observed_at="2026-01-23T00:10:00.000000Z", comm="cart",
                   probe_type=None),
        ],
    )  # fmt: skip


def test_summary_per_symbol(run_cli, tmp_path: Path) -> None:
    obs = _observations(tmp_path)
    result = run_cli(
        "observations", "query", "--observations", obs, "--summary", "--format", "json"
    )
    assert result.exit_code == 0, result.stderr
    symbols = {s["node_hash"]: s for s in json.loads(result.stdout)["symbols"]}
    ssl = symbols[SSL]
    assert ssl["count"] == 5 and ssl["records"] == 2
    assert ssl["first_observed_at"] == "2026-01-23T00:00:01.000000Z"
    assert ssl["last_observed_at"] == "2026-01-23T00:00:05.000000Z"
    assert ssl["probe_types"] == ["uprobe", "uretprobe"]
    assert ssl["containers"] == ["c" * 64, "d" * 64]
    assert symbols[CONNECT]["probe_types"] == ["unknown"]
    table = run_cli("observations", "query", "--observations", obs, "--summary")
    assert table.exit_code == 0 and "SSL_read" in table.stdout


def test_filters(run_cli, tmp_path: Path) -> None:
    obs = _observations(tmp_path)

    def names(*args: str) -> list[str]:
        result = run_cli("observations", "query", "--observations", obs, "--format", "json", *args)
        assert result.exit_code == 0, result.stderr
        return [r["function_name"] for r in json.loads(result.stdout)["records"]]

    assert names("--service", "checkout") == ["SSL_read", "SSL_read@@OPENSSL_3.0.0"]
    assert names("--service", "cart") == ["connect"]
    assert names("--container", "ddd") == ["SSL_read@@OPENSSL_3.0.0"]
    assert names("--symbol", "SSL_read") == ["SSL_read", "SSL_read@@OPENSSL_3.0.0"]  # normalised
    assert names("--symbol", "conn*") == ["connect"]
    assert names("--from", "2026-01-23T00:00:03Z", "--to", "2026-01-23T00:05:00Z") == [
        "SSL_read@@OPENSSL_3.0.0"
    ]


def test_query_bad_line_and_inputs(run_cli, tmp_path: Path) -> None:
    obs = _observations(tmp_path)
    obs.write_bytes(obs.read_bytes() + b'{"node_hash": 1}\n')
    result = run_cli("observations", "query", "--observations", obs, "--summary")
    assert result.exit_code == 2 and f"{obs}:4:" in result.stderr
    both = run_cli("observations", "query", "--observations", obs, "--evidence", tmp_path)
    assert both.exit_code == 2 and "exactly one" in both.stderr
    empty = run_cli("observations", "query", "--evidence", tmp_path)
    assert empty.exit_code == 2 and "no evidence chain" in empty.stderr


def test_query_evidence_chain(run_cli, tmp_path: Path, test_keys) -> None:
    from tests.functionmap.functionmap_helpers import write_chain

    records = [
        record(SSL, "SSL_read", observed_at=f"2026-01-23T00:00:0{i}.000000Z") for i in range(5)
    ]
    write_chain(tmp_path / "evidence", "c1", records, test_keys.signer("collector"))
    result = run_cli("observations", "query", "--evidence", tmp_path / "evidence", "--summary",
                     "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    (summary,) = json.loads(result.stdout)["symbols"]
    assert summary["count"] == 5 and summary["last_observed_at"] == "2026-01-23T00:00:04.000000Z"
