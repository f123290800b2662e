"""`bundle verify` with worker processes gives the report the pass alone gives, byte for byte.

Chunks and the view's blocks are scanned in worker processes and their results folded in
archive order (`verify/chunkwork.py`); each tampered bundle below is verified both ways and
the two reports must be equal (same verdict, same first failure of each step, same notes).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from tests.bundle.bundle_helpers import (
    chains_bundle_members,
    resign_manifest,
    verify_report,
    view_edit,
    write_members,
    zstd_lines,
    zstd_of_lines,
)

Members = list[tuple[str, bytes]]


@pytest.fixture(scope="module", params=["merged", "chain"])
def several_chunks(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, test_keys: Any
) -> Members:
    """Chains of several chunks each and the members of their bundle: two chains (a merged
    view, compared by its multiset) or one (its view is its lines in order: by pieces)."""
    chunks = {"host-a": 300, "host-b": 400} if request.param == "merged" else {"host-a": 300}
    return chains_bundle_members(tmp_path_factory.mktemp("parallel"), test_keys, chunks)


def _bad_record_and_bad_seal(members: Members) -> Members:
    """A record error in host-a's second chunk, unparsable seals after it (host-a's fourth,
    host-b's first when there is one)."""
    out = []
    for name, data in members:
        if name == "evidence/host-a/0000000002.ndjson.zst":
            lines = zstd_lines(data)
            lines[5] = lines[5].replace(b'"probe_type":"uprobe"', b'"probe_type":"nope"')
            data = zstd_of_lines(lines)
        elif name in (
            "evidence/host-a/0000000004.seal.dsse.json",
            "evidence/host-b/0000000001.seal.dsse.json",
        ):
            data = b"{not json"
        out.append((name, data))
    return out


def _bomb_then_bad_name(members: Members) -> Members:
    """A zstd bomb in a chunk; the archive's refusal names it, not a later member."""
    bomb = zstandard.ZstdCompressor(level=19).compress(b"\n" * (64 << 20))
    return [(n, bomb if n == "evidence/host-a/0000000003.ndjson.zst" else d) for n, d in members]


TAMPERINGS: dict[str, Callable[[Members], Members]] = {
    "valid": lambda members: members,
    "record-and-seal-errors": _bad_record_and_bad_seal,
    "view-reversed": view_edit(lambda lines: lines[::-1]),
    "view-line-missing": view_edit(lambda lines: lines[:100] + lines[101:]),
    "view-line-twice": view_edit(lambda lines: lines[:100] + lines[99:]),
    "view-swapped-pair": view_edit(lambda lines: [*lines[:50], lines[51], lines[50], *lines[52:]]),
    "zstd-bomb": _bomb_then_bad_name,
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_workers_give_the_same_report(
    tmp_path: Path, several_chunks: Members, test_keys: Any, tampering: str
) -> None:
    members = resign_manifest(TAMPERINGS[tampering](several_chunks), test_keys.signer("builder"))
    bundle = write_members(tmp_path / "t.stella.bundle.tgz", members)
    inline = verify_report(bundle, test_keys.trust_root, workers=False)
    parallel = verify_report(bundle, test_keys.trust_root, workers=True)
    assert parallel == inline
    if tampering == "valid":
        assert inline[1]["predicate"]["verification_result"] == "PASSED", inline
    elif tampering == "zstd-bomb":
        assert inline[0] == "refused" and "0000000003.ndjson.zst" in inline[1]
    elif tampering == "record-and-seal-errors":
        # Malformed content: refused (no report), named by its first place in archive order.
        assert inline[0] == "refused", inline
        assert inline[1].startswith(
            "verification failed at step 'schemas' (schema validation of every document and "
            "record): evidence/host-a/0000000002.ndjson.zst:6: "
        ), inline[1]
    else:
        steps = {step["name"]: step for step in inline[1]["predicate"]["steps"]}
        assert steps["evidence-chains"]["status"] == "failed", steps
