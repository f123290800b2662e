"""The build's chunk check takes the collector's plain blocks through one msgspec pass
(`observations_view.plain_records_keys`); any block it does not take goes through the map
verifier's scan and the line-by-line order check. Both must decide alike: the same first error
(file, line, field) or the same records, order and clean-lines verdict, for blocks mixing the
lines either path might read differently (escapes, duplicate or spaced keys, nested
`observed_at`, blank lines, bad records, disorder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import zstandard
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stella_bundle.bundle import observations_view
from stella_bundle.bundle.streams import whole_line_blocks
from stella_bundle.coverage.scan import BlockScan, ObservationAggregator
from stella_bundle.errors import StellaError
from tests.conftest import scaled_examples

HASH = "sha256:" + "ab" * 32


def _record(second: int, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "node_hash": HASH,
        "function_name": "SSL_read",
        "purl": "pkg:deb/debian/libssl3@3",
        "probe_type": "uprobe",
        "observed_at": f"2026-11-21T10:00:{second:02d}.000000Z",
        "pid": 42,
        "comm": "nginx",
    }
    record.update(extra)
    return record


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def _line(kind: str, second: int) -> bytes:
    stamp = f"2026-11-21T10:00:{second:02d}.000000Z"
    plain = _canonical(_record(second))
    variants: dict[str, bytes] = {
        "plain": plain,
        "spaced-key": plain.replace(b'"observed_at":', b'"observed_at" :'),
        "spaced-value": plain.replace(b'"observed_at":"', b'"observed_at": "'),
        "duplicate-key": plain[:-1] + b',"observed_at":"2026-11-21T09:00:00.000000Z"}',
        "escaped-stamp": plain.replace(stamp.encode(), b"\\u0032" + stamp[1:].encode()),
        "escaped-comm": _canonical(_record(second, comm='a"observed_at":"0')),
        "value-named-key": _canonical(_record(second, comm="observed_at")),
        "nested": _canonical(_record(second, details={"observed_at": "1999-01-01"})),
        "key-order": json.dumps(_record(second)).encode(),
        "count": _canonical(_record(second, count=3)),
        "bad-pid": _canonical(_record(second, pid=-1)),
        "bad-hash": _canonical(_record(second, node_hash="sha256:XYZ")),
        "bad-date": plain.replace(b"2026-11-21", b"2026-02-30"),
        "not-json": plain[:-1],
        "blank": b"",
        "spaces": b"  \t",
        "non-ascii": _canonical(_record(second, comm="wörk")),
    }
    return variants[kind]


KINDS = (
    "plain",
    "spaced-key",
    "spaced-value",
    "duplicate-key",
    "escaped-stamp",
    "escaped-comm",
    "value-named-key",
    "nested",
    "key-order",
    "count",
    "bad-pid",
    "bad-hash",
    "bad-date",
    "not-json",
    "blank",
    "spaces",
    "non-ascii",
)


def _reference(path: str) -> tuple[Any, Any]:
    """`check_chunk` without its msgspec fast path: the scan and the order check of every
    block as the build ran them before it."""
    order = observations_view._ChunkOrderCheck()
    scan = BlockScan(ObservationAggregator(), path)
    try:
        with open(path, "rb") as handle:
            data = zstandard.ZstdDecompressor().decompressobj().decompress(handle.read())
        chunks = iter([data[i : i + 700] for i in range(0, len(data), 700)])
        for block in whole_line_blocks(chunks, path):
            order.feed(block)
            scan.feed(block, block.count(b"\n"))
    except StellaError as exc:
        return (type(exc), exc.message, exc.path, exc.line, exc.field), None
    return None, order.result()


@settings(max_examples=scaled_examples(150), deadline=None)
@given(
    lines=st.lists(
        st.tuples(
            # Mostly the collector's lines, so that whole blocks can take the fast path.
            st.sampled_from(("plain",) * len(KINDS) + KINDS),
            st.integers(0, 59),
        ),
        min_size=1,
        max_size=12,
    ),
    final_newline=st.booleans(),
)
# Each would fool a check by counts alone: one line without the exact key, one with it twice;
# an escaped key; a quote inside a value.
@example(lines=[("spaced-key", 5), ("duplicate-key", 6)], final_newline=True)
@example(lines=[("spaced-value", 5), ("duplicate-key", 6), ("plain", 7)], final_newline=True)
@example(lines=[("escaped-stamp", 5), ("plain", 6)], final_newline=True)
@example(lines=[("escaped-comm", 5)], final_newline=True)
@example(lines=[("nested", 50), ("plain", 6)], final_newline=True)
@example(lines=[("plain", 5), ("bad-hash", 6)], final_newline=True)
@example(lines=[("plain", 5), ("plain", 4)], final_newline=True)
def test_fast_check_decides_as_the_scan(
    tmp_path_factory: Any, lines: list[tuple[str, int]], final_newline: bool
) -> None:
    content = b"\n".join(_line(kind, second) for kind, second in lines)
    content += b"\n" if final_newline else b""
    path = tmp_path_factory.mktemp("chunk") / "0000000001.ndjson.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(content))
    original = observations_view.WORKER_BLOCK
    observations_view.WORKER_BLOCK = 700  # several blocks per chunk, cut at line ends
    try:
        fast = observations_view.check_chunk(str(path))
    finally:
        observations_view.WORKER_BLOCK = original
    assert fast == _reference(str(path))


def test_the_collectors_blocks_take_the_fast_path(tmp_path: Path) -> None:
    """Else the test above compares the slow path with itself."""
    block = b"".join(_canonical(_record(s)) + b"\n" for s in range(30))
    assert observations_view.plain_records_keys(block, 30) == [
        f"2026-11-21T10:00:{s:02d}.000000Z" for s in range(30)
    ]
    for kind in KINDS:
        mixed = block + _line(kind, 31) + b"\n"
        keys = observations_view.plain_records_keys(mixed, mixed.count(b"\n"))
        assert (keys is not None) == (kind in ("plain", "non-ascii", "count")), kind
