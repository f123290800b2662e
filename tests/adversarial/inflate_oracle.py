"""The differential check of the gzip and zstd framing tests: our one inflater against the
command-line tool an auditor would use (`gzip`, `zstd`), on the same bytes."""

from __future__ import annotations

import io

from stella_bundle.compression import BoundedInflater
from stella_bundle.errors import MalformedDocumentError


def assert_inflates_as_tool(data: bytes, kind: str, name: str, tool: tuple[int, bytes]) -> None:
    """What the tool decompressed when it succeeded (exit code 0), a refusal when it failed."""
    code, out = tool
    try:
        got: bytes | None = BoundedInflater(io.BytesIO(data), kind, name).read()
    except MalformedDocumentError:
        got = None
    assert got == (out if code == 0 else None)
