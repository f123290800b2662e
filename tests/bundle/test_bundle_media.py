"""Media split/join: every part checked first, bad and missing parts named, parts untouched."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.bundle import media
from stella_bundle.bundle.media import (
    NAMED_SIZES,
    join_parts,
    parse_part_size,
    split_bundle,
)
from stella_bundle.errors import InputError, PartIntegrityError
from stella_bundle.formats.trust_root import TrustRoot


def _digests(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if ".part-" in p.name
    }


@pytest.fixture
def parts(tmp_path: Path, built_bundle: Path) -> Path:
    directory = tmp_path / "media"
    directory.mkdir()
    source = directory / built_bundle.name
    shutil.copy(built_bundle, source)
    split_bundle(source, 8 * 1024)
    source.unlink()  # the air-gapped side only has the parts
    return directory / f"{built_bundle.name}.parts.json"


def test_part_sizes() -> None:
    assert parse_part_size("1048576") == 1048576
    assert parse_part_size("4G") == 4 * 1024**3
    assert parse_part_size("700M") == 700 * 1024**2
    assert parse_part_size("4GiB") == 4 * 1024**3
    assert parse_part_size("fat32") == 4 * 1024**3 - 1 == NAMED_SIZES["fat32"]
    assert parse_part_size("DVD") == NAMED_SIZES["dvd"] < 4_700_000_000
    assert parse_part_size("bd") == NAMED_SIZES["bd"] < 25_000_000_000
    for bad in ("", "0", "4X", "-1", "lots"):
        with pytest.raises(InputError):
            parse_part_size(bad)


def test_split_then_join_round_trips(parts: Path, built_bundle: Path, tmp_path: Path) -> None:
    index = json.loads(parts.read_text())
    assert index["bundle"]["sha256"] == hashlib.sha256(built_bundle.read_bytes()).hexdigest()
    assert len(index["parts"]) == -(-built_bundle.stat().st_size // (8 * 1024)) > 3
    assert all(p["size"] <= 8 * 1024 for p in index["parts"])
    before = _digests(parts.parent)
    output = tmp_path / "joined" / built_bundle.name
    output.parent.mkdir()
    result = join_parts(parts, output)
    assert output.read_bytes() == built_bundle.read_bytes()
    assert result.sha256 == index["bundle"]["sha256"]
    assert _digests(parts.parent) == before


def test_flipped_byte_names_exactly_that_part(parts: Path, tmp_path: Path) -> None:
    bad = parts.parent / (parts.name.replace(".parts.json", ".part-0002"))
    data = bytearray(bad.read_bytes())
    data[100] ^= 0x01
    bad.write_bytes(bytes(data))
    before = _digests(parts.parent)
    output = tmp_path / "out.stella.bundle.tgz"
    with pytest.raises(PartIntegrityError) as caught:
        join_parts(parts, output)
    message = caught.value.describe()
    assert "part-0002: sha256" in message
    assert "1 of" in message and "part-0001" not in message and "part-0003" not in message
    assert not output.exists()
    assert _digests(parts.parent) == before, "parts are never modified"


def test_missing_part_is_named_and_rerun_reuses_verified_parts(
    parts: Path, tmp_path: Path, built_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = parts.parent / parts.name.replace(".parts.json", ".part-0003")
    kept = tmp_path / "kept-part"
    shutil.move(missing, kept)
    output = tmp_path / "out.stella.bundle.tgz"
    with pytest.raises(PartIntegrityError, match=r"part-0003: missing"):
        join_parts(parts, output)
    assert not output.exists()
    total = len(json.loads(parts.read_text())["parts"])

    hashed: list[str] = []
    real = media.file_sha256

    def counting(path: Path) -> str:
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(media, "file_sha256", counting)
    shutil.move(kept, missing)  # the replacement arrives
    result = join_parts(parts, output)
    assert hashed == [missing.name], "only the replaced part is read for checking"
    assert result.checked == (missing.name,)
    assert len(result.reused) == total - 1
    assert output.read_bytes() == built_bundle.read_bytes()


def test_cache_does_not_hide_a_changed_part(parts: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.stella.bundle.tgz"
    join_parts(parts, output)
    part = parts.parent / parts.name.replace(".parts.json", ".part-0001")
    data = bytearray(part.read_bytes())
    data[0] ^= 0xFF
    part.write_bytes(bytes(data))  # same size, new mtime
    with pytest.raises(PartIntegrityError, match="part-0001"):
        join_parts(parts, tmp_path / "again.stella.bundle.tgz")


def test_signed_index(tmp_path: Path, built_bundle: Path, test_keys: Any) -> None:
    source = tmp_path / built_bundle.name
    shutil.copy(built_bundle, source)
    result = split_bundle(source, 32 * 1024, signer=test_keys.signer("builder"))
    assert result.envelope_path is not None and result.envelope_path.exists()
    trust_root = TrustRoot.load(test_keys.trust_root)
    join_parts(result.index_path, tmp_path / "j" / source.name, trust_root=trust_root)
    index = json.loads(result.index_path.read_text())
    index["part_size"] += 1
    result.index_path.write_text(json.dumps(index))
    with pytest.raises(PartIntegrityError, match="differs from the one signed"):
        join_parts(result.index_path, tmp_path / "k" / source.name, trust_root=trust_root)


def test_cli_split_and_join(tmp_path: Path, built_bundle: Path, run_cli: Any) -> None:
    source = tmp_path / built_bundle.name
    shutil.copy(built_bundle, source)
    split = run_cli("bundle", "split", source, "--part-size", "20000")
    assert split.exit_code == 0, split.stderr
    index = tmp_path / f"{source.name}.parts.json"
    bad = tmp_path / f"{source.name}.part-0001"
    bad.write_bytes(b"x" + bad.read_bytes()[1:])
    joined = tmp_path / "j.stella.bundle.tgz"
    failed = run_cli("bundle", "join", index, "--output", joined)
    assert failed.exit_code == 1
    assert "part-0001" in failed.stderr and not joined.exists()
    usage = run_cli("bundle", "split", source, "--part-size", "huge")
    assert usage.exit_code == 2 and "--part-size" in usage.stderr
