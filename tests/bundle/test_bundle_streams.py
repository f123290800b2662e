"""The verifier's line tally: the fast path for the collector's lines equals line by line."""

from __future__ import annotations

import hashlib

import pytest

from stella_bundle.bundle.observations_view import RecordMultiset
from stella_bundle.bundle.streams import LineTally

LINES = [b'{"a":%d,"observed_at":"2026-11-21T00:00:%02d.000000Z"}' % (i, i % 60) for i in range(50)]


def _tally(data: bytes, size: int) -> tuple[int, str, str]:
    multiset, sequence = RecordMultiset(), hashlib.sha256()
    tally = LineTally("x", multiset, sequence)
    for start in range(0, len(data), size):
        tally.feed(data[start : start + size])
    tally.finish()
    return tally.lines, multiset.hexdigest(), sequence.hexdigest()


@pytest.mark.parametrize("size", [1, 7, 64, 1000, 1 << 20])
@pytest.mark.parametrize(
    "data",
    [
        b"".join(line + b"\n" for line in LINES),
        b"\n".join(LINES),  # no final newline
        b"\n\n" + b"\n \t\n".join(LINES) + b"\n\r\n",  # blank and whitespace-only lines
        b" " + b"\n".join(LINES) + b"\n",  # a line starting with a space is not blank
    ],
)
def test_tally_counts_and_hashes_the_non_blank_lines(data: bytes, size: int) -> None:
    lines = [line for line in data.split(b"\n") if line.strip()]
    expected = RecordMultiset()
    expected.add_many(lines)
    sequence = hashlib.sha256(b"".join(line + b"\n" for line in lines)).hexdigest()
    assert _tally(data, size) == (len(lines), expected.hexdigest(), sequence)
