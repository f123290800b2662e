"""`bundle join`: the output is never an input, and the verified-parts cache cannot be fooled.

Class 9 of issue 9. Parts are split here from random bytes (join checks digests, not bundle
contents). The output may not be the parts index, its signature, any part or the trust root,
named directly, through a symlink, through `..`, or as a hard link: each is refused with
exit 2 in one line naming the output, every input byte-identical afterwards and nothing new
on disk. A part edited in place with its mtime put back (same size, inode and mtime) is
named (exit 1), nothing is joined, and the cache holds no entry for it, also when the edit
happens after the cache was written by a good run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.bundle.bundle_helpers import snapshot
from tests.conftest import CliResult, cpu_seconds

NAME = "b.stella.bundle.tgz"


@pytest.fixture
def parts(tmp_path: Path, test_keys: Any) -> Path:
    from stella_bundle.bundle.media import split_bundle

    bundle = tmp_path / NAME
    bundle.write_bytes(os.urandom(5000))
    (tmp_path / "parts").mkdir()
    result = split_bundle(
        bundle, 1024, output_dir=tmp_path / "parts", signer=test_keys.signer("builder")
    )
    assert result.index_path.name == f"{NAME}.parts.json"
    return result.index_path


def _digests(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _inputs(index: Path, test_keys: Any) -> dict[str, Path]:
    directory = index.parent
    return {
        "index": index,
        "signature": directory / f"{NAME}.parts.dsse.json",
        "first-part": directory / f"{NAME}.part-0001",
        "last-part": sorted(directory.glob(f"{NAME}.part-*"))[-1],
        "trust-root": test_keys.trust_root,
    }


def _spellings(target: Path, tmp_path: Path) -> dict[str, Path]:
    link = tmp_path / "elsewhere" / "link.tgz"
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(target)
    hard = tmp_path / "elsewhere" / "hard.tgz"
    os.link(target, hard)
    return {
        "direct": target,
        "dot-dot": target.parent / ".." / target.parent.name / target.name,
        "symlink": link,
        "hard-link": hard,
    }


@pytest.mark.parametrize("spelling", ["direct", "dot-dot", "symlink", "hard-link"])
@pytest.mark.parametrize("which", ["index", "signature", "first-part", "last-part", "trust-root"])
def test_output_naming_an_input_is_refused(
    which: str,
    spelling: str,
    parts: Path,
    tmp_path: Path,
    test_keys: Any,
    run_cli: Callable[..., CliResult],
) -> None:
    target = _inputs(parts, test_keys)[which]
    output = _spellings(target, tmp_path)[spelling]
    guarded = {parts.parent, test_keys.trust_root.parent}
    before_bytes = {d: _digests(d) for d in guarded}
    before = snapshot(tmp_path)
    started = cpu_seconds()
    result = run_cli(
        "bundle", "join", parts, "--output", output, "--trust-root", test_keys.trust_root
    )
    assert cpu_seconds() - started < 20
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(output) in lines[0] and "would overwrite" in lines[0], lines[0]
    assert {d: _digests(d) for d in guarded} == before_bytes, "an input was modified"
    assert snapshot(tmp_path) == before, "nothing may be written"


def test_output_in_another_directory_still_joins(
    parts: Path, tmp_path: Path, test_keys: Any, run_cli: Callable[..., CliResult]
) -> None:
    output = tmp_path / "out" / NAME
    result = run_cli(
        "bundle", "join", parts, "--output", output, "--trust-root", test_keys.trust_root
    )
    assert result.exit_code == 0, result.stderr
    assert output.read_bytes() == (tmp_path / NAME).read_bytes()


def _edit_in_place_keeping_mtime(path: Path) -> None:
    info = path.stat()
    with open(path, "r+b") as handle:  # same inode, same size
        first = handle.read(1)
        handle.seek(0)
        handle.write(bytes([first[0] ^ 0xFF]))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        info.st_ino,
        info.st_size,
        info.st_mtime_ns,
    )


def _cache(output: Path) -> dict[str, Any]:
    path = output.parent / f".{output.name}.verified-parts.json"
    loaded: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    return loaded


@pytest.mark.parametrize("which", ["first-part", "last-part"])
def test_part_edited_in_place_with_mtime_restored_is_named(
    which: str,
    parts: Path,
    tmp_path: Path,
    test_keys: Any,
    run_cli: Callable[..., CliResult],
) -> None:
    output = tmp_path / "out" / NAME
    good = run_cli("bundle", "join", parts, "--output", output)
    assert good.exit_code == 0, good.stderr
    part = _inputs(parts, test_keys)[which]
    assert part.name in _cache(output)
    output.unlink()
    _edit_in_place_keeping_mtime(part)
    before = snapshot(tmp_path)
    result = run_cli("bundle", "join", parts, "--output", output)
    assert result.exit_code == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and part.name in lines[0], result.stderr
    assert not output.exists(), "nothing joined"
    assert part.name not in _cache(output), "the cache keeps no entry for the edited part"
    assert {p for p in snapshot(tmp_path) - before if not p.startswith("out")} == set()


def test_poisoned_cache_entry_is_named_and_dropped(
    parts: Path, tmp_path: Path, test_keys: Any, run_cli: Callable[..., CliResult]
) -> None:
    """Even a cache entry matching every stat field of an altered part (the cache claims
    it verified) cannot get a bad bundle written: the whole digest fails, the part is named
    and the entry is dropped."""
    output = tmp_path / "out" / NAME
    assert run_cli("bundle", "join", parts, "--output", output).exit_code == 0
    output.unlink()
    part = _inputs(parts, test_keys)["first-part"]
    _edit_in_place_keeping_mtime(part)
    cache_path = output.parent / f".{output.name}.verified-parts.json"
    cache = _cache(output)
    info = part.stat()
    cache[part.name].update(ctime_ns=info.st_ctime_ns, mtime_ns=info.st_mtime_ns)
    cache_path.write_text(json.dumps(cache))
    result = run_cli("bundle", "join", parts, "--output", output)
    assert result.exit_code == 1, result.stderr
    assert part.name in result.stderr and "changed since" in result.stderr
    assert not output.exists()
    assert part.name not in _cache(output)
    assert len(result.stderr.strip().splitlines()) == 1
