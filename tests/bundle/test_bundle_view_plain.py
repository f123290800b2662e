"""A chain-order view is summed up from its pieces when they match chains whose keys are plain
and in order (`verify.records._ViewBlocks`), else block by block by `view_block`. Both must
give the same report, byte for byte, whatever was done to the view or the chunks: each
tampered bundle below is verified both ways (inline and with workers), with views and chunks
cut into small blocks so that pieces and view blocks straddle each other; and by the spans the
seals declare (`records.chain_view`, the default way, which falls back to pieces when it does
not settle the view), the same report again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.bundle import streams
from stella_bundle.verify import records
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
VIEW = "observations/"


@pytest.fixture(scope="module")
def one_chain(tmp_path_factory: pytest.TempPathFactory, test_keys: Any) -> Members:
    return chains_bundle_members(tmp_path_factory.mktemp("plain-view"), test_keys, {"host-a": 700})


def _both(edit: Callable[[list[bytes]], list[bytes]]) -> Callable[[Members], Members]:
    """The same edit of the second chunk's lines and of the view (pieces still match)."""

    def apply(members: Members) -> Members:
        out: Members = []
        first = 0
        for name, data in members:
            if name == "evidence/host-a/0000000001.ndjson.zst":
                first = len(zstd_lines(data))
            if name == "evidence/host-a/0000000002.ndjson.zst":
                lines = zstd_lines(data)
                data = zstd_of_lines(edit(lines))
                count = len(lines)
            if name.startswith(VIEW):
                lines = data.splitlines()
                middle = edit(lines[first : first + count])
                data = b"".join(x + b"\n" for x in lines[:first] + middle + lines[first + count :])
            out.append((name, data))
        return out

    return apply


def _key(line: bytes) -> bytes:
    return line[line.index(b'"observed_at":"') + 15 :][:27]


def _earlier(line: bytes) -> bytes:
    return line.replace(_key(line), b"2026-01-01T00:00:00.000000Z")


def _dup_key(line: bytes) -> bytes:
    return line[:-1] + b',"observed_at":"2026-01-01T00:00:00.000000Z"}'


def _escaped_key(line: bytes) -> bytes:
    """The same key, escaped: a JSON reader reads it as before, the view's order check not."""
    return line.replace(b'"observed_at":"2', b'"observed_at":"\\u0032')


def _escaped(line: bytes) -> bytes:
    return line.replace(b'"comm":"workload"', b'"comm":"work\\"load"')


TAMPERINGS: dict[str, Callable[[Members], Members]] = {
    "valid": lambda members: members,
    "view-reversed": view_edit(lambda lines: lines[::-1]),
    "view-line-missing": view_edit(lambda lines: lines[:2100] + lines[2101:]),
    "view-line-twice": view_edit(lambda lines: lines[:2100] + lines[2099:]),
    "view-swapped-pair-late": view_edit(
        lambda lines: [*lines[:2500], lines[2501], lines[2500], *lines[2502:]]
    ),
    "view-key-earlier": view_edit(
        lambda lines: [*lines[:1800], _earlier(lines[1800]), *lines[1801:]]
    ),
    "view-duplicate-key": view_edit(
        lambda lines: [*lines[:1800], _dup_key(lines[1800]), *lines[1801:]]
    ),
    "view-escaped": view_edit(lambda lines: [*lines[:1800], _escaped(lines[1800]), *lines[1801:]]),
    "view-extra-line": view_edit(lambda lines: [*lines, lines[-1]]),
    "view-blank-line": view_edit(lambda lines: [*lines[:1000], b"", *lines[1000:]]),
    "view-long-line": view_edit(lambda lines: [*lines[:2800], b"x" * (3 << 20), *lines[2800:]]),
    "view-no-final-newline": lambda members: [
        (n, d[:-1] if n.startswith(VIEW) else d) for n, d in members
    ],
    "chain-out-of-order": _both(lambda lines: [lines[1], lines[0], *lines[2:]]),
    "chain-duplicate-key": _both(lambda lines: [lines[0], _dup_key(lines[1]), *lines[2:]]),
    "chain-escaped": _both(lambda lines: [_escaped(lines[0]), *lines[1:]]),
    "chain-key-earlier": _both(lambda lines: [*lines[:300], _earlier(lines[300]), *lines[301:]]),
    # In order within the chunk, not after the chunk before it.
    "chain-first-earlier": _both(lambda lines: [_earlier(lines[0]), *lines[1:]]),
    "chain-escaped-key": _both(lambda lines: [*lines[:5], _escaped_key(lines[5]), *lines[6:]]),
}


class _NoPieces(records._ViewBlocks):
    """Every block through `view_block`: what the view check did before pieces summed it up."""

    def __init__(self, order: Any, work: Any, pieces: Any) -> None:
        super().__init__(order, work, None)


CALLS: list[int] = []
_VIEW_BLOCK = records.view_block


def _counted_view_block(block: bytes, merged: bool) -> Any:
    CALLS.append(1)  # inline only: a worker process counts in its own copy
    return _VIEW_BLOCK(block, merged)


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_pieces_give_the_report_of_view_blocks(
    tmp_path: Path,
    one_chain: Members,
    test_keys: Any,
    tampering: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    members = resign_manifest(TAMPERINGS[tampering](one_chain), test_keys.signer("builder"))
    bundle = write_members(tmp_path / "t.stella.bundle.tgz", members)
    # Small pieces (chunk blocks) and small view blocks, cut at different places.
    monkeypatch.setattr(streams, "READ_CHUNK", 5000)
    monkeypatch.setattr(records, "READ_BLOCK", 7001)
    CALLS.clear()
    monkeypatch.setattr(records, "view_block", _counted_view_block)
    reports = {}
    for workers in (False, True):
        reports["pieces", workers] = verify_report(
            bundle, test_keys.trust_root, workers=workers, by_spans=False
        )
    pieces_calls = len(CALLS)
    for workers in (False, True):  # the default way (`chain_view`), the same report
        reports["spans", workers] = verify_report(bundle, test_keys.trust_root, workers=workers)
    monkeypatch.setattr(records, "_ViewBlocks", _NoPieces)
    for workers in (False, True):
        reports["view_block", workers] = verify_report(
            bundle, test_keys.trust_root, workers=workers, by_spans=False
        )
    expected = reports["view_block", False]
    assert all(report == expected for report in reports.values()), tampering
    assert len(CALLS) > pieces_calls  # the view_block way ran (inline)
    if tampering == "valid":
        assert expected[1]["predicate"]["verification_result"] == "PASSED"
        assert pieces_calls == 0  # the pieces way summed the view up alone
    else:
        assert expected[0] == "refused" or expected[1]["predicate"]["verification_result"] == (
            "FAILED"
        )
