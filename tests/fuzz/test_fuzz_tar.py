"""Fuzzing the bundle's tar reader: mutated real archives, random bytes and bombs.

The reader (`bundle.reader.SafeTarReader`) must refuse any hostile or corrupt archive with the
project's own error (ArchiveError), never another exception, with bounded memory, and what it
yields must hold to its promises: a checked, normalised name and exactly `size` content bytes.
"""

from __future__ import annotations

import functools
import gzip
import io

import pytest
from fuzz_support import (
    bounded_memory,
    call_allowing_own_errors,
    fuzz_settings,
    seed_bundle,
)
from hypothesis import example, given
from hypothesis import strategies as st
from tar_mutations import BLOCK, RECIPES, TarRecipe, mutate_tar, set_field, small_seeds

from stella_bundle.bundle.reader import ReaderLimits, SafeTarReader
from stella_bundle.errors import ArchiveError
from stella_bundle.formats.manifest import check_member_name
from tests.conftest import cpu_seconds

SOURCE = "fuzz.stella.bundle.tgz"


def read_archive(data: bytes, prefetch: bool, limits: ReaderLimits | None = None) -> int:
    """Iterate every member and read its content; return how many members were read."""
    reader = SafeTarReader(io.BytesIO(data), SOURCE, limits, prefetch=prefetch)
    count = 0
    try:
        for member, stream in reader:
            # What the reader yields keeps its promises.
            assert check_member_name(member.name, SOURCE) == member.name
            assert member.size >= 0, member
            if count % 2:  # every other member left unread: the reader must skip it itself
                got = sum(len(chunk) for chunk in stream.iter_chunks(1 << 16))
                assert got == member.size, (member, got)
            count += 1
    finally:
        reader.close()
    return count


@functools.cache
def tar_seeds() -> list[bytes]:
    """Uncompressed: a real bundle built by the library, then small pax, GNU and ustar tars."""
    return [gzip.decompress(seed_bundle().bundle.read_bytes()), *small_seeds()]


def test_seeds_are_valid() -> None:
    """The fuzzer starts from archives the reader accepts, so mutations reach deep code."""
    for raw in tar_seeds():
        assert read_archive(gzip.compress(raw), prefetch=False) >= 2


@fuzz_settings(scale=1.0)
@given(seed=st.integers(min_value=0, max_value=3), recipe=RECIPES, prefetch=st.booleans())
# Found by this fuzzer: a pax 'size' of -1 was yielded as a member of size -1 (fixed in b16cd2d).
@example(
    seed=0, recipe=([("pax", 0, [(b"size", b"-1")], 0, b"x")], "marker", [], []), prefetch=False
)
def test_tar_reader_mutated_archives(seed: int, recipe: TarRecipe, prefetch: bool) -> None:
    data = mutate_tar(tar_seeds()[seed], recipe)
    with bounded_memory():
        call_allowing_own_errors(lambda: read_archive(data, prefetch))


@fuzz_settings(scale=0.3)
@given(
    data=st.binary(max_size=4096),
    wrap=st.sampled_from(["raw", "gzip-magic", "gzip"]),
)
def test_tar_reader_random_bytes(data: bytes, wrap: str) -> None:
    if wrap == "gzip-magic":
        data = b"\x1f\x8b" + data
    elif wrap == "gzip":
        data = gzip.compress(data, compresslevel=1)
    with bounded_memory():
        error = call_allowing_own_errors(lambda: read_archive(data, prefetch=False))
    if wrap != "gzip" or len(data) < 1024:
        return
    # Random bytes of 1 KiB or more are no tar: the reader must say so.
    assert isinstance(error, ArchiveError)


# --- bombs -------------------------------------------------------------------------------------


@functools.cache
def zero_member() -> bytes:
    """A gzip member of 16 MiB of zeros (made once, at first use, not at collection)."""
    return gzip.compress(b"\0" * (16 << 20), compresslevel=9, mtime=0)


def _bomb(kind: str) -> bytes:
    """A gzip tar that inflates to ~1 GiB from ~1 MiB or less (multi-member gzip of zeros)."""
    header = set_field(b"\0" * BLOCK, "name", b"evidence/host-a/0000000001.ndjson.zst")
    header = set_field(header, "mode", b"0000644\0")
    header = set_field(header, "magic", b"ustar\0")
    if kind == "member":
        head = set_field(header, "size", b"%011o\0" % (1 << 30))  # one member of 1 GiB of zeros
    else:
        head = b"\0" * 2 * BLOCK  # an empty archive, then zeros after its end marker
    return gzip.compress(head, mtime=0) + zero_member() * 64


@pytest.mark.parametrize("kind", ["member", "after-end"])
def test_tar_reader_gzip_bomb(kind: str) -> None:
    data = _bomb(kind)
    assert len(data) < (2 << 20)
    started = cpu_seconds()
    with bounded_memory(64 << 20), pytest.raises(ArchiveError, match="gzip bomb"):
        read_archive(data, prefetch=True)
    assert cpu_seconds() - started < 10


def test_tar_reader_deflate_stream_corruption() -> None:
    """Garbage deep in the deflate stream (not only in the gzip header) is an ArchiveError
    (a zlib error, a CRC mismatch or a corrupt tar header, depending on what inflates)."""
    data = bytearray(gzip.compress(tar_seeds()[0], compresslevel=1))
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    for prefetch in (True, False):
        with pytest.raises(ArchiveError):
            read_archive(bytes(data), prefetch=prefetch)


def test_memory_bound_catches_a_blow_up() -> None:
    """The bound used by every target does see a large allocation (C or Python)."""
    with pytest.raises(AssertionError, match="MiB at its peak"), bounded_memory(64 << 20):
        block = bytearray(96 << 20)
        block[:: 1 << 12] = b"x" * len(range(0, len(block), 1 << 12))
