"""Foundation pieces: atomic writes, JSON reading errors, timestamps, CLI exit-code mapping."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from pathlib import Path

import pytest

from stella_bundle import cli
from stella_bundle.digests import HashingWriter
from stella_bundle.errors import InputError, MalformedDocumentError, VerificationFailure
from stella_bundle.fsutil import atomic_writer, write_bytes_atomic
from stella_bundle.jsonio import load_json, load_json_object
from stella_bundle.timeutil import (
    build_time,
    canonical_timestamp,
    format_timestamp,
    parse_timestamp,
)


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_bytes_atomic(target, b"first")
    write_bytes_atomic(target, b"second", mode=0o600)
    assert target.read_bytes() == b"second"
    assert (target.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_write_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write(b"half")
        raise RuntimeError("crash in the middle")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_write_into_missing_directory_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="output directory does not exist"):
        write_bytes_atomic(tmp_path / "nope" / "x", b"")


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "a": 1,\n  "b": \n}\n')
    with pytest.raises(MalformedDocumentError) as info:
        load_json(bad)
    assert info.value.describe().startswith(f"{bad}:4: malformed JSON")


def test_missing_file_and_wrong_kind(tmp_path: Path) -> None:
    with pytest.raises(MalformedDocumentError, match="file not found"):
        load_json(tmp_path / "absent.json")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(MalformedDocumentError, match="expected a JSON object, found list"):
        load_json_object(tmp_path / "list.json")


def test_timestamps_round_trip_and_reject_naive() -> None:
    moment = parse_timestamp("2026-01-23T01:02:03.5+02:00")
    assert format_timestamp(moment) == "2026-01-22T23:02:03.500000Z"
    assert parse_timestamp("2026-01-23T00:00:00Z") == dt.datetime(2026, 1, 23, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="no time zone"):
        parse_timestamp("2026-01-23T00:00:00")
    with pytest.raises(ValueError, match="not an RFC 3339"):
        parse_timestamp("yesterday")


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("2026-01-23T00:00:00.000001Z", "2026-01-23T00:00:00.000001Z"),
        ("2026-01-23T00:00:00Z", "2026-01-23T00:00:00.000000Z"),
        ("2026-01-23T01:02:03.5+02:00", "2026-01-22T23:02:03.500000Z"),
        ("2026-01-23T00:00:00.123456789Z", "2026-01-23T00:00:00.123456Z"),
    ],
)
def test_canonical_timestamp(value: str, canonical: str) -> None:
    assert canonical_timestamp(value) == canonical


def test_canonical_timestamp_refuses_what_is_not_a_timestamp() -> None:
    with pytest.raises(ValueError, match="not an RFC 3339"):
        canonical_timestamp("yesterday")


def test_build_time_honours_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert format_timestamp(build_time()) == "2023-11-14T22:13:20.000000Z"


def test_error_description_names_path_line_field() -> None:
    error = InputError("expected an integer", path="a.ndjson", line=3, field="count")
    assert error.describe() == "a.ndjson:3: field 'count': expected an integer"
    assert InputError.exit_code == 2
    assert VerificationFailure.exit_code == 1


def test_cli_usage_error_exits_2(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("keys", "no-such-command")
    assert result.exit_code == 2
    assert "No such command" in result.stderr


def test_cli_input_error_is_one_line_exit_2(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("keys", "fingerprint", tmp_path / "missing.pub.json")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'missing.pub.json'}: file not found"
    ]


def test_cli_internal_error_exits_3_and_verbose_shows_traceback(
    run_cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    def explode(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr("stella_bundle.cli.keys.load_public_key", explode)
    quiet = run_cli("keys", "fingerprint", tmp_path / "k")
    assert quiet.exit_code == 3
    assert "internal error: ZeroDivisionError: boom" in quiet.stderr
    assert "Traceback" not in quiet.stderr
    loud = run_cli("--verbose", "keys", "fingerprint", tmp_path / "k")
    assert loud.exit_code == 3
    assert "Traceback" in loud.stderr


def test_version_flag(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("stella ")


def test_python_dash_m_entrypoint_runs() -> None:
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "stella_bundle", "--version"], capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("stella ")
    assert cli.main(["--version"]) == 0


def test_hashing_writer_hashes_counts_and_passes_on() -> None:
    inner = io.BytesIO()
    writer = HashingWriter(inner)
    for piece in (b"abc", b"", b"\x00" * 70000):
        assert writer.write(piece) == len(piece)
    writer.flush()
    data = b"abc" + b"\x00" * 70000
    assert inner.getvalue() == data
    assert (writer.digest.hexdigest(), writer.count) == (
        hashlib.sha256(data).hexdigest(),
        len(data),
    )
    alone = HashingWriter()  # no inner: measured only
    alone.write(data)
    assert alone.digest.hexdigest() == writer.digest.hexdigest()
