"""Writer options from `stellaops.yaml` (the seeds' `signals:` keys) and from CLI flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from evidence_support import make_record

from stella_bundle.errors import ConfigError
from stella_bundle.evidence.chain import verify_chain
from stella_bundle.evidence.config import WriterConfig, load_signals_config

SEED_STYLE = """
signals:
  enabled: true
  output_directory: {out}
  rotation:
    max_size_mb: 100
    max_age_hours: 1
  signing:
    enabled: true
    key_file: {key}
  filters:
    target_containers: []
    path_allowlist: ["/etc/**"]
"""


def test_seed_style_config(tmp_path: Path) -> None:
    path = tmp_path / "stellaops.yaml"
    path.write_text(SEED_STYLE.format(out=tmp_path / "evidence", key=tmp_path / "c.key"))
    config = load_signals_config(path)
    assert config.output_directory == tmp_path / "evidence"
    assert config.key_file == tmp_path / "c.key"
    assert config.writer == WriterConfig(max_size_mb=100, max_age_seconds=3600)
    assert config.other["filters"]["path_allowlist"] == ["/etc/**"]  # the collector's keys


def test_all_writer_keys(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "signals:\n  chain_id: node-7\n  zstd_level: 9\n  flush_interval_ms: 250\n"
        "  rotation: {max_size_mb: 8, max_age_seconds: 30, max_records: 5000}\n"
    )
    config = load_signals_config(path)
    assert config.chain_id == "node-7" and config.key_file is None
    assert config.writer == WriterConfig(8, 30, 5000, 9, 0.25)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("signals:\n  rotation: {max_size_gb: 1}\n", "signals.rotation.max_size_gb"),
        ("signals:\n  rotation: {max_size_mb: -1}\n", "signals.rotation.max_size_mb"),
        ("signals:\n  rotation: {max_age_hours: 1, max_age_seconds: 5}\n", "signals.rotation"),
        ("signals:\n  zstd_level: 40\n", "signals.zstd_level"),
        ("signals:\n  signing: {key_id: fulcio}\n", "signals.signing.key_id"),
        (
            "signals:\n  signing: {key_file: k, submit_to_rekor: true}\n",
            "signals.signing.submit_to_rekor",
        ),
        ("signals:\n  signing: {enabled: false}\n", "signals.signing.enabled"),
        ("signals: [1]\n", "signals"),
        ("other: {}\n", "signals"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, body: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as caught:
        load_signals_config(path)
    assert caught.value.field == field and caught.value.path == str(path)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("signals:\n  rotation: [\n")
    with pytest.raises(ConfigError) as caught:
        load_signals_config(path)
    assert caught.value.line is not None


def test_import_from_config(tmp_path: Path, test_keys: Any, run_cli: Any) -> None:
    source = tmp_path / "external.ndjson"
    source.write_text("".join(json.dumps(make_record(i)) + "\n" for i in range(250)))
    config = tmp_path / "stellaops.yaml"
    config.write_text(
        SEED_STYLE.format(out=tmp_path / "evidence", key=test_keys.private("collector")).replace(
            "max_age_hours: 1", "max_age_hours: 1\n    max_records: 100"
        )
    )
    result = run_cli(
        "observations",
        "import",
        source,
        "--config",
        config,
        "--chain-id",
        "replay-1",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary == {
        "chain_id": "replay-1",
        "chain_dir": str(tmp_path / "evidence" / "replay-1"),
        "records": 250,
        "chunks": 3,
    }
    assert verify_chain(tmp_path / "evidence" / "replay-1", test_keys.trust_root).passed
    # Flags override the file.
    again = run_cli(
        "observations",
        "import",
        source,
        "--config",
        config,
        "--chain-id",
        "replay-2",
        "--max-records",
        "50",
    )
    assert again.exit_code == 0 and "(5 sealed chunks)" in again.stdout
