"""`bundle verify` with worker processes gives the report the pass alone gives, byte for byte.

Chunks and the view's blocks are scanned in worker processes and their results folded in
archive order (`verify/chunkwork.py`); each tampered bundle below is verified both ways and
the two reports must be equal (same verdict, same first failure of each step, same notes).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from stella_bundle.bundle.build import build_bundle
from stella_bundle.errors import ArchiveError
from stella_bundle.formats.trust_root import TrustRoot
from stella_bundle.verify import VerifyLimits, verify_bundle
from stella_bundle.verify.chunkwork import WorkLimits
from tests.bundle.bundle_helpers import (
    make_inputs,
    read_members,
    records_for,
    resign_manifest,
    write_chain,
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
    root = tmp_path_factory.mktemp("parallel")
    inputs = make_inputs(root / "in", test_keys)
    shutil.rmtree(inputs.evidence)
    records = records_for(inputs.nodes, 3000)
    collector = test_keys.signer("collector")
    if request.param == "merged":
        write_chain(inputs.evidence, "host-a", collector, records[::2], 300)
        write_chain(inputs.evidence, "host-b", collector, records[1::2], 400)
    else:
        write_chain(inputs.evidence, "host-a", collector, records, 300)
    bundle = build_bundle(
        function_maps=[inputs.function_map],
        evidence=[inputs.evidence],
        signer=test_keys.signer("builder"),
        output=root / "several.stella.bundle.tgz",
    ).output
    return read_members(bundle)


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


def _view(edit: Callable[[list[bytes]], list[bytes]]) -> Callable[[Members], Members]:
    def apply(members: Members) -> Members:
        return [
            (n, b"".join(line + b"\n" for line in edit(d.splitlines())))
            if n.startswith("observations/")
            else (n, d)
            for n, d in members
        ]

    return apply


def _bomb_then_bad_name(members: Members) -> Members:
    """A zstd bomb in a chunk; the archive's refusal names it, not a later member."""
    bomb = zstandard.ZstdCompressor(level=19).compress(b"\n" * (64 << 20))
    return [(n, bomb if n == "evidence/host-a/0000000003.ndjson.zst" else d) for n, d in members]


TAMPERINGS: dict[str, Callable[[Members], Members]] = {
    "valid": lambda members: members,
    "record-and-seal-errors": _bad_record_and_bad_seal,
    "view-reversed": _view(lambda lines: lines[::-1]),
    "view-line-missing": _view(lambda lines: lines[:100] + lines[101:]),
    "view-line-twice": _view(lambda lines: lines[:100] + lines[99:]),
    "view-swapped-pair": _view(lambda lines: [*lines[:50], lines[51], lines[50], *lines[52:]]),
    "zstd-bomb": _bomb_then_bad_name,
}


def _verify(bundle: Path, trust_root: Path, workers: bool) -> tuple[str, Any]:
    work = WorkLimits(parallel_min_bytes=0, workers=2) if workers else WorkLimits(workers=1)
    try:
        outcome = verify_bundle(bundle, TrustRoot.load(trust_root), limits=VerifyLimits(work=work))
    except ArchiveError as exc:
        return "refused", exc.describe()
    statement = json.loads(json.dumps(outcome.statement))
    del statement["predicate"]["time_verified"]
    return "report", statement


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_workers_give_the_same_report(
    tmp_path: Path, several_chunks: Members, test_keys: Any, tampering: str
) -> None:
    members = resign_manifest(TAMPERINGS[tampering](several_chunks), test_keys.signer("builder"))
    bundle = write_members(tmp_path / "t.stella.bundle.tgz", members)
    inline = _verify(bundle, test_keys.trust_root, workers=False)
    parallel = _verify(bundle, test_keys.trust_root, workers=True)
    assert parallel == inline
    if tampering == "valid":
        assert inline[1]["predicate"]["verification_result"] == "PASSED", inline
    elif tampering == "zstd-bomb":
        assert inline[0] == "refused" and "0000000003.ndjson.zst" in inline[1]
    else:
        steps = {step["name"]: step for step in inline[1]["predicate"]["steps"]}
        failed = "schemas" if tampering == "record-and-seal-errors" else "evidence-chains"
        assert steps[failed]["status"] == "failed", steps
        if failed == "schemas":
            assert steps[failed]["message"].startswith(
                "evidence/host-a/0000000002.ndjson.zst:6: "
            ), steps[failed]
