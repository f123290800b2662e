"""zstd streams read as `zstd -d` reads them: a truncated frame is an error.

python-zstandard's stream reader returns what a truncated last frame held and stops without an
error, where `zstd -d` fails ("premature end"): an evidence chunk, an observations file or a
Tetragon backup cut short was read as its first records here and as an error by the auditor's
tool. `compression.ZstdFrames` follows the frames' headers and block headers as the bytes go
by; `zstd` itself is the oracle here.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stella_bundle.compression import BoundedInflater
from stella_bundle.errors import MalformedDocumentError
from tests.adversarial.inflate_oracle import assert_inflates_as_tool
from tests.conftest import scaled_examples

pytestmark = pytest.mark.skipif(shutil.which("zstd") is None, reason="needs the zstd tool")

SKIPPABLE = struct.pack("<II", 0x184D2A53, 5) + b"hello"


def frame(data: bytes, *, checksum: bool = True, size: bool = True, level: int = 3) -> bytes:
    return zstandard.ZstdCompressor(
        level=level, write_checksum=checksum, write_content_size=size
    ).compress(data)


def zstd_verdict(data: bytes, tmp_path: Path) -> tuple[int, bytes]:
    path = tmp_path / "oracle.zst"
    path.write_bytes(data)
    done = subprocess.run(["zstd", "-dcq", str(path)], capture_output=True)
    return done.returncode, done.stdout


def ours(data: bytes) -> bytes:
    return BoundedInflater(io.BytesIO(data), "zstd", "chunk.ndjson.zst").read()


BIG = os.urandom(200_000) + b'{"a": 1}\n' * 50_000  # blocks of every kind, several frames deep


TRUNCATED = {
    "checksum cut": (frame(b"first\n")[:-3], "ends inside zstd frame 1"),
    "second frame cut": (frame(b"a\n") + frame(b"b\n")[:7], "ends inside zstd frame 2"),
    "large frame cut mid-block": (frame(BIG)[:-5000], "ends inside zstd frame 1"),
    "skippable frame cut": (frame(b"a\n") + SKIPPABLE[:-2], "ends inside zstd frame 2"),
    "empty": (b"", "no zstd frame"),
}


@pytest.mark.parametrize("case", sorted(TRUNCATED))
def test_a_truncated_zstd_stream_is_refused_as_zstd_refuses_it(case: str, tmp_path: Path) -> None:
    data, says = TRUNCATED[case]
    assert zstd_verdict(data, tmp_path)[0] != 0, case
    with pytest.raises(MalformedDocumentError, match=says) as caught:
        ours(data)
    assert "chunk.ndjson.zst" in str(caught.value) and "\n" not in str(caught.value)


def test_whole_streams_read_as_zstd_reads_them(tmp_path: Path) -> None:
    for data in (
        frame(BIG),
        frame(BIG, checksum=False, size=False) + frame(b"tail\n"),
        SKIPPABLE + frame(b"x\n") + SKIPPABLE,
        frame(b""),
        frame(b"\n" * 100_000, level=19),  # RLE blocks
    ):
        code, out = zstd_verdict(data, tmp_path)
        assert code == 0
        assert ours(data) == out


@settings(
    max_examples=scaled_examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    pieces=st.lists(
        st.tuples(
            st.sampled_from([b"", b"x\n", BIG[:70_000], b"\n" * 5000, BIG[-40_000:]]),
            st.booleans(),
            st.booleans(),
            st.booleans(),
        ),
        min_size=1,
        max_size=3,
    ),
    cut=st.integers(0, 200),
)
@example(pieces=[(b"x\n", True, True, False)], cut=1)
def test_differential_against_zstd(
    pieces: list[tuple[bytes, bool, bool, bool]], cut: int, tmp_path: Path
) -> None:
    """Frames of every shape, skippable frames between, the end cut off or not: whatever we
    read, zstd reads to the same bytes; whatever it refuses, we refuse."""
    data = b"".join(
        (SKIPPABLE if skippable else b"") + frame(body, checksum=checksum, size=size)
        for body, checksum, size, skippable in pieces
    )
    data = data[: len(data) - cut]
    assert_inflates_as_tool(data, "zstd", "chunk.ndjson.zst", zstd_verdict(data, tmp_path))
