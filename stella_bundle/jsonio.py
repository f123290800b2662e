"""Reading JSON documents with errors that name the file and what was expected."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from .canonical import canonical_bytes
from .errors import MalformedDocumentError
from .fsutil import write_bytes_atomic

# Documents (trust roots, keys, envelopes, function maps, SBOMs, configs) are read whole into
# memory and parsed there: past this, a path naming /dev/zero, a runaway pipe or a file of
# gigabytes was a MemoryError (an "internal error", exit 3) instead of a refusal naming it.
MAX_DOCUMENT_BYTES = 512 * 1024**2


def read_bytes(path: str | Path, limit: int | None = None) -> bytes:
    """The file's bytes, refused past `limit` (default MAX_DOCUMENT_BYTES; a pipe or a device
    is read in pieces, never more than the limit; a regular file is judged by its size before
    it is read)."""
    limit = MAX_DOCUMENT_BYTES if limit is None else limit
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if stat.S_ISREG(info.st_mode):
                data = handle.read() if info.st_size <= limit else b""
                size = max(info.st_size, len(data))
            else:
                pieces: list[bytes] = []
                size = 0
                while size <= limit and (piece := handle.read(1 << 20)):
                    pieces.append(piece)
                    size += len(piece)
                data = b"".join(pieces)
    except FileNotFoundError as exc:
        raise MalformedDocumentError("file not found", path=path) from exc
    except IsADirectoryError as exc:
        raise MalformedDocumentError("expected a file, found a directory", path=path) from exc
    except OSError as exc:
        raise MalformedDocumentError(f"cannot read file: {exc.strerror}", path=path) from exc
    if size > limit:
        raise MalformedDocumentError(
            f"more than {limit} bytes: over the limit of a document read into memory", path=path
        )
    return data


# A surrogate can only reach a parsed string through a `\\uD800`-`\\uDFFF` escape (UTF-8 cannot
# carry one); only then is the parsed value checked for a lone one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def _refuse_lone_surrogates(
    value: Any, data: bytes | str, message: str, source: str | Path, line: int | None
) -> Any:
    """A lone surrogate is not Unicode text: it cannot be written as UTF-8 or canonical JSON,
    and orjson and msgspec (the fast readers) refuse it, so every reader refuses it here too."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if _SURROGATE_ESCAPE.search(raw) is None:
        return value
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MalformedDocumentError(message, path=source, line=line) from exc
    return value


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(key)
            seen.add(key)
    return document


class _NotJsonNumberError(ValueError):
    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.token = token


def _refuse_constant(token: str) -> Any:
    raise _NotJsonNumberError(token)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (_INF, -_INF):  # 1e400: a double cannot hold it; json would make it infinite
        raise _NotJsonNumberError(text[:40])
    return value


_INF = float("inf")
_BOM = b"\xef\xbb\xbf"


def _text(data: bytes | str) -> str:
    """UTF-8 only (json.loads would also read UTF-16 and UTF-32); a UTF-8 byte order mark is
    skipped, as `json` did and as SBOMs written by Windows tools need."""
    if isinstance(data, str):
        return data
    return data[len(_BOM) :].decode("utf-8") if data.startswith(_BOM) else data.decode("utf-8")


def _loads(text: str, **hooks: Any) -> Any:
    """json.loads without its extensions: NaN, Infinity, -Infinity and numbers past a double
    (orjson and RFC 8785 refuse them; jsonschema's bounds compare false against NaN)."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, **hooks)


def _not_a_number(token: str) -> str:
    return f"{token!r} is not a JSON number (NaN, Infinity and numbers past a double are refused)"


def parse_json(data: bytes | str, source: str | Path, line: int | None = None) -> Any:
    """The toolkit's one JSON parse of outside documents: every way `json` can fail on hostile
    input becomes a one-line `MalformedDocumentError` naming `source` (and `line`).

    An object naming one key twice is refused: `json` keeps the last value, other readers the
    first or an error, so a signed or trusted document written that way means different
    things to different verifiers. (NDJSON records keep `json`'s last-wins, which the fast
    record scanners reproduce: `parse_json_line`.)"""
    try:
        value = _loads(_text(data), object_pairs_hook=_unique_keys)
    except _NotJsonNumberError as exc:
        raise MalformedDocumentError(
            f"malformed JSON: {_not_a_number(exc.token)}", path=source, line=line
        ) from exc
    except _DuplicateKeyError as exc:
        raise MalformedDocumentError(_repeated_key(exc.key), path=source, line=line) from exc
    except UnicodeDecodeError as exc:
        raise MalformedDocumentError("not UTF-8 text", path=source, line=line) from exc
    except json.JSONDecodeError as exc:
        raise MalformedDocumentError(
            f"malformed JSON at column {exc.colno}: {exc.msg}",
            path=source,
            line=exc.lineno if line is None else line,
        ) from exc
    except RecursionError as exc:  # json's C scanner gives up near 1000 levels of nesting
        raise MalformedDocumentError("JSON nested too deeply", path=source, line=line) from exc
    except ValueError as exc:
        # Python refuses to convert an integer of more than 4300 digits (CVE-2020-10735).
        raise MalformedDocumentError(
            f"JSON number out of range: {_out_of_range(exc)}", path=source, line=line
        ) from exc
    return _refuse_lone_surrogates(
        value, data, "malformed JSON: a lone surrogate escape is not Unicode text", source, line
    )


class _Members(list[tuple[str, Any]]):
    """An object's members as `json` read them, in order (repeats kept)."""


def refuse_repeated_outer_keys(data: bytes | str, source: str | Path) -> None:
    """Refuse a document whose outermost object names a key twice, as `parse_json` refuses
    it in any object, while the objects inside keep `json`'s last-wins: a verify body's
    records are read as NDJSON lines are (`parse_json_line`). `data` has passed the JSON rule
    already (a fast reader took it): this reads its members only, at `json`'s pace."""
    try:
        outer = json.loads(_text(data), object_pairs_hook=_Members)
    except RecursionError as exc:  # as parse_json: orjson reads deeper than json's scanner
        raise MalformedDocumentError("JSON nested too deeply", path=source) from exc
    if type(outer) is not _Members:
        return
    seen: set[str] = set()
    for key, _ in outer:
        if key in seen:
            raise MalformedDocumentError(_repeated_key(key), path=source)
        seen.add(key)


def _repeated_key(key: str) -> str:
    return f"malformed JSON: key {key!r} appears twice in one object"


def parse_json_line(data: bytes | str, source: str | Path, line: int) -> Any:
    """One NDJSON line: the same parse as `parse_json`, errors worded for a line of NDJSON
    (`file:line: malformed NDJSON: ...`).

    Bytes are decoded as UTF-8 first: `json.loads` would otherwise skip a byte order mark and
    read UTF-16 or UTF-32, which the fast line scanners (coverage.scan) refuse."""
    try:
        value = _loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except _NotJsonNumberError as exc:
        raise MalformedDocumentError(
            f"malformed NDJSON: {_not_a_number(exc.token)}", path=source, line=line
        ) from exc
    except UnicodeDecodeError as exc:
        raise MalformedDocumentError("malformed NDJSON: not UTF-8", path=source, line=line) from exc
    except json.JSONDecodeError as exc:
        raise MalformedDocumentError(
            f"malformed NDJSON: {exc.msg} (column {exc.colno})", path=source, line=line
        ) from exc
    except RecursionError as exc:
        raise MalformedDocumentError(
            "malformed NDJSON: nested too deeply", path=source, line=line
        ) from exc
    except ValueError as exc:
        raise MalformedDocumentError(
            f"malformed NDJSON: number out of range: {_out_of_range(exc)}",
            path=source,
            line=line,
        ) from exc
    return _refuse_lone_surrogates(
        value, data, "malformed NDJSON: a lone surrogate escape is not Unicode text", source, line
    )


def _out_of_range(exc: ValueError) -> str:
    """Python's message without its advice to the programmer (sys.set_int_max_str_digits)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if "integer string conversion" in text:
        return "an integer of more than 4300 digits"
    return text


def load_json(path: str | Path) -> Any:
    return parse_json(read_bytes(path), path)


def load_json_object(path: str | Path, what: str = "a JSON object") -> dict[str, Any]:
    document = load_json(path)
    if not isinstance(document, dict):
        raise MalformedDocumentError(f"expected {what}, found {type(document).__name__}", path=path)
    return document


def write_canonical_json(path: str | Path, document: Any, mode: int = 0o644) -> bytes:
    """Write the RFC 8785 form of `document` atomically; return the bytes written."""
    data = canonical_bytes(document)
    write_bytes_atomic(path, data, mode)
    return data
