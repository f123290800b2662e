"""Regular expressions for canonical observation lines (sorted keys, no whitespace).

Every pattern here accepts a strict subset of what `formats.record.validate_record`
accepts; calendar dates are checked separately (`date_ok`), since spelling the calendar out in
a pattern costs more than a cache of the dates already seen.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Final

from ..formats.record import KINDS, PROBE_TYPES

# JSON strings, "unrolled" with possessive quantifiers so the engine never backtracks into them.
_CHARS = r'[^"\\\x00-\x1f]*+'
# No surrogate escapes (`\\uD800`-`\\uDFFF`): a line holding one takes the full path, which
# accepts a pair and refuses a lone one (jsonio), as orjson and msgspec do.
_ESC = r'\\(?:["\\/bfnrt]|u(?![dD][89abcdefABCDEF])[0-9a-fA-F]{4})'
_STR = rf'"{_CHARS}(?:{_ESC}{_CHARS})*+"'
_NESTR = rf'"(?=[^"])(?:{_CHARS}(?:{_ESC}{_CHARS})*+)"'
# At most 15 digits: always within RFC 8785's ±(2**53 - 1); longer numbers take the full path.
_UINT = r"(?:0|[1-9][0-9]{0,14})"
_SINT = r"-?(?:0|[1-9][0-9]{0,14})"
_SCALAR = rf"(?:{_STR}|{_SINT}|true|false|null)"
_ARRAY = rf"\[(?:{_SCALAR}(?:,{_SCALAR})*)?\]"
_DVAL = rf"(?:{_SCALAR}|{_ARRAY})"
# `details` in the fast path: a flat object of scalars and scalar arrays (argv, addresses).
_DETAILS = rf"\{{(?:{_STR}:{_DVAL}(?:,{_STR}:{_DVAL})*)?\}}"
# Canonical UTC timestamps. The regex checks the shape and the time of day; the calendar date
# (April 31, February 29 of a non-leap year) is checked in the fold against a cache of dates
# already seen valid, which is much cheaper than spelling the calendar out in the pattern.
_TS = r'"([0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z)"'
VALID_DATES: set[str] = set()


def date_ok(stamp: str) -> bool:
    """Whether the YYYY-MM-DD prefix of a canonical timestamp is a real date (cached)."""
    day = stamp[:10]
    if day in VALID_DATES:
        return True
    try:
        dt.date(int(day[:4]), int(day[5:7]), int(day[8:10]))
    except ValueError:
        return False
    if len(VALID_DATES) > 100_000:
        VALID_DATES.clear()
    VALID_DATES.add(day)
    return True


_HASH = r'"(sha256:[0-9a-f]{64})"'
_PROBE = '"(' + "|".join(PROBE_TYPES) + ')"'
_KIND = '"(?:' + "|".join(KINDS) + ')"'


def _before(key: str, value: str) -> str:
    return f'(?:"{key}":{value},)?'


def _after(key: str, value: str) -> str:
    return f'(?:,"{key}":{value})?'


# Compiled when first used (`canonical_line`): ~25 ms that a command whose records all take
# msgspec's path (fastdecode) never needs.
_CANONICAL_LINE: Final = (
    r"^\{"
    + _before("binary_path", _STR)
    + _before("build_id", _STR)
    + _before("comm", _STR)
    + _before("container_id", _STR)
    + _before("count", r"([1-9][0-9]{0,14})")
    + _before("details", _DETAILS)
    + _before("first_observed_at", _TS)
    + f'"function_name":({_NESTR})'
    + _after("host", _STR)
    + _after("image_digest", r'"sha256:[0-9a-f]{64}"')
    + _after("kind", _KIND)
    + _after("last_observed_at", _TS)
    + _after("namespace", _STR)
    + f',"node_hash":{_HASH}'
    + f',"observed_at":{_TS}'
    + _after("pid", _UINT)
    + _after("pod_name", _STR)
    + _after("probe_type", _PROBE)
    + _after("purl", f"({_STR})")
    + r"\}$"
)


@functools.cache
def canonical_line() -> re.Pattern[str]:
    """Any canonical observation line (sorted keys, no whitespace), multiline-anchored."""
    return re.compile(_CANONICAL_LINE, re.MULTILINE)


# Per field: (value pattern, capture group index or None). Group order of every line pattern:
# count, first_observed_at, function_name, last_observed_at, node_hash, observed_at,
# probe_type, purl (absent fields capture "").
_SIMPLE_STR = r'"[^"\\\x00-\x1f]*"'
_SHAPE_FIELDS: Final[dict[str, tuple[str, int | None]]] = {
    "binary_path": (_SIMPLE_STR, None),
    "build_id": (_SIMPLE_STR, None),
    "comm": (_SIMPLE_STR, None),
    "container_id": (_SIMPLE_STR, None),
    "count": (r"([1-9][0-9]{0,14})", 0),
    "first_observed_at": (_TS, 1),
    "function_name": (r'("[^"\\\x00-\x1f]+")', 2),
    "host": (_SIMPLE_STR, None),
    "image_digest": (r'"sha256:[0-9a-f]{64}"', None),
    "kind": (_KIND, None),
    "last_observed_at": (_TS, 3),
    "namespace": (_SIMPLE_STR, None),
    "node_hash": (_HASH, 4),
    "observed_at": (_TS, 5),
    "pid": (_UINT, None),
    "pod_name": (_SIMPLE_STR, None),
    "probe_type": (_PROBE, 6),
    "purl": (f"({_SIMPLE_STR})", 7),
}
FIRST_KEYS = re.compile(r'"([a-z_]+)":')


@functools.lru_cache(maxsize=64)
def shape_pattern(keys: tuple[str, ...]) -> re.Pattern[str] | None:
    """A pattern for lines with exactly these (sorted) keys and escape-free strings.

    It accepts a subset of `canonical_line()` (hence of validate_record) and is about a third
    faster: no optional groups. Absent captured fields are empty groups, so match tuples
    have `canonical_line()`'s layout.
    """
    if list(keys) != sorted(set(keys)) or not {"function_name", "node_hash", "observed_at"} <= set(
        keys
    ):
        return None
    if any(key not in _SHAPE_FIELDS for key in keys):
        return None  # details (nested) and unknown keys: the general pattern decides
    captured = {_SHAPE_FIELDS[key][1] for key in keys} - {None}
    pending = [index for index in range(8) if index not in captured]
    pieces = []
    for key in keys:
        value, index = _SHAPE_FIELDS[key]
        if index is not None:
            while pending and pending[0] < index:
                pieces.append("()")
                pending.pop(0)
        separator = "," if any(piece != "()" for piece in pieces) else ""
        pieces.append(f'{separator}"{key}":{value}')
    pattern = r"^\{" + "".join(pieces) + "()" * len(pending) + r"\}$"
    return re.compile(pattern, re.MULTILINE)


# Group order of `canonical_line().findall` tuples.
_G_COUNT, _G_FIRST, _G_NAME, _G_LAST, _G_HASH, _G_OBSERVED, _G_PROBE, _G_PURL = range(8)
