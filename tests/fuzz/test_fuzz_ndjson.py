"""Fuzzing the NDJSON / .ndjson.zst readers with mutated real observation files, and bombs.

Seeds are valid observation files written here: plain NDJSON and zstd (one frame, or several). A
mutation alters one record (a JSON structural mutation), the bytes of a line, the line structure
(blank lines, CRLF, a BOM, no final newline, a duplicated or very long line) or the compressed
bytes. Every reader of such files must answer with the project's own errors only, within bounded
memory: `observations import`'s reader (iter_observations), `function-map verify --observations`
(ObservationAggregator.scan_file) and `stella schema validate` (validate_file); and the three must
accept and refuse the same files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import zstandard
from fuzz_support import (
    bounded_memory,
    call_allowing_own_errors,
    full_record,
    fuzz_settings,
    record,
)
from fuzz_support import scratch_dir as scratch
from hypothesis import example, given
from hypothesis import strategies as st
from json_mutations import MUTATIONS, mutated_json
from tar_mutations import BYTE_OPS, apply_bytes

from stella_bundle.coverage.scan import ObservationAggregator
from stella_bundle.errors import InputError
from stella_bundle.observations.ndjson import iter_observations
from stella_bundle.schema import validate_file
from tests.conftest import cpu_seconds

RECORDS = [record(i) for i in range(30)] + [full_record()]
LINES = [json.dumps(r, separators=(",", ":"), sort_keys=True).encode() for r in RECORDS]

LINE_OPS = st.one_of(
    st.tuples(st.just("record"), st.integers(0, 63), st.lists(MUTATIONS, min_size=1, max_size=2)),
    st.tuples(st.just("line-bytes"), st.integers(0, 63), BYTE_OPS),
    st.tuples(st.just("blank"), st.integers(0, 63), st.sampled_from([b"", b" ", b"\t", b"\r"])),
    st.tuples(st.just("dup"), st.integers(0, 63)),
    st.tuples(st.just("long"), st.integers(0, 63), st.integers(1, 3 << 20)),
)
FILE_OPS = st.sampled_from(["lf", "lf", "crlf", "bom", "no-final-newline"])
CONTAINERS = st.sampled_from(["plain", "zstd", "zstd", "zstd-frames"])
COMPRESSED_OPS = st.just([]) | st.just([]) | st.lists(BYTE_OPS, min_size=1, max_size=1)

Recipe = tuple[list[tuple[Any, ...]], str, str, list[tuple[Any, ...]]]
RECIPES: Any = st.tuples(st.lists(LINE_OPS, max_size=3), FILE_OPS, CONTAINERS, COMPRESSED_OPS)


def _apply_line_op(lines: list[bytes], op: tuple[Any, ...]) -> list[bytes]:
    index = op[1] % len(lines)
    if op[0] == "record":
        lines[index] = mutated_json(json.loads(LINES[index % len(LINES)]), op[2])
    elif op[0] == "line-bytes":
        lines[index] = apply_bytes(lines[index], op[2])
    elif op[0] == "blank":
        lines.insert(index, op[2])
    elif op[0] == "dup":
        lines.insert(index, lines[index])
    elif op[0] == "long":  # a valid record padded with a long string, or a long run of junk
        lines[index] = lines[index][:-1] + b',"comm":"' + b"x" * op[2] + b'"}'
    return lines


def make_file(recipe: Recipe) -> tuple[bytes, str]:
    """(file bytes, file name) for a recipe."""
    line_ops, ending, container, compressed_ops = recipe
    lines = list(LINES)
    for op in line_ops:
        lines = _apply_line_op(lines, op)
    newline = b"\r\n" if ending == "crlf" else b"\n"
    text = newline.join(lines) + (b"" if ending == "no-final-newline" else newline)
    if ending == "bom":
        text = b"\xef\xbb\xbf" + text
    if container == "plain":
        return text, "observations.ndjson"
    compressor = zstandard.ZstdCompressor(level=1)
    if container == "zstd-frames":
        middle = len(text) // 2
        data = compressor.compress(text[:middle]) + compressor.compress(text[middle:])
    else:
        data = compressor.compress(text)
    for op in compressed_ops:
        data = apply_bytes(data, op)
    return data, "observations.ndjson.zst"


def read_everywhere(path: Path) -> list[BaseException | None]:
    """What each reader of the file says: None (accepted) or the project error it raised."""

    def import_reader() -> None:
        for _ in iter_observations([path]):
            pass

    return [
        call_allowing_own_errors(function)
        for function in (
            import_reader,
            lambda: ObservationAggregator().scan_file(path),
            lambda: validate_file(path),
        )
    ]


def check_file(data: bytes, name: str) -> None:
    path = scratch("ndjson") / name
    path.write_bytes(data)
    with bounded_memory():
        imported, scanned, by_schema = read_everywhere(path)
    # One definition of an observations file: the commands accept and refuse the same ones...
    assert (imported is None) == (scanned is None), (imported, scanned, data[:300])
    if (by_schema is None) != (imported is None):
        # ...but for one documented leniency (docs/schemas.md): input may omit probe_type
        # (validate_record fills in "unknown"), the schema of a stored record requires it.
        assert imported is None, (imported, data[:300])
        assert isinstance(by_schema, InputError), by_schema
        assert by_schema.field == "probe_type" and "required" in by_schema.message, by_schema


def test_seed_files_are_valid() -> None:
    for container in ("plain", "zstd", "zstd-frames"):
        data, name = make_file(([], "lf", container, []))
        path = scratch("ndjson-seed") / name
        path.write_bytes(data)
        assert read_everywhere(path) == [None, None, None]


@fuzz_settings(scale=0.4)
@given(recipe=RECIPES)
@example(recipe=([("record", 0, [("raw", 2, 0)])], "lf", "zstd", []))  # a 4,301-digit integer
@example(recipe=([("record", 0, [("raw", 5, 16)])], "lf", "plain", []))  # nesting 100,000 deep
@example(recipe=([], "bom", "plain", []))  # import read past a BOM, function-map verify did not
@example(recipe=([("record", 0, [("delete", 6)])], "lf", "plain", []))  # no probe_type
def test_ndjson_mutated_files(recipe: Recipe) -> None:
    check_file(*make_file(recipe))


@fuzz_settings(scale=0.15)
@given(data=st.binary(max_size=2048), compress=st.booleans())
def test_ndjson_random_bytes(data: bytes, compress: bool) -> None:
    if compress:
        data = zstandard.ZstdCompressor(level=1).compress(data)
    check_file(data, "observations.ndjson.zst" if compress else "observations.ndjson")


# --- bombs -------------------------------------------------------------------------------------


def _zstd_bomb(unit: bytes, copies: int) -> bytes:
    """`copies` frames of 16 MiB of `unit` repeated: a few KiB that inflate to copies*16 MiB."""
    frame = zstandard.ZstdCompressor(level=19).compress(unit * ((16 << 20) // len(unit)))
    return frame * copies


@pytest.mark.parametrize(
    ("kind", "unit"),
    [("newlines", b"\n"), ("one-line", b"x"), ("blank-lines", b" \n")],
)
def test_ndjson_zstd_bomb(kind: str, unit: bytes) -> None:
    """4 GiB of newlines (or one 4 GiB line) in a few KiB: refused quickly, memory bounded."""
    data = _zstd_bomb(unit, 256)
    assert len(data) < (1 << 20)
    path = scratch("ndjson-bomb") / f"{kind}.ndjson.zst"
    path.write_bytes(data)
    for reader in ("import", "scan", "schema"):
        started = cpu_seconds()
        with bounded_memory(), pytest.raises(InputError):
            if reader == "import":
                for _ in iter_observations([path]):
                    pass
            elif reader == "scan":
                ObservationAggregator().scan_file(path)
            else:
                validate_file(path)
        assert cpu_seconds() - started < 10, reader
