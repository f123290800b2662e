"""Byte sizes given as options (`--max-member-size`, `--part-size`): `700M`, `4G`, `4GiB`.

A module of its own so that `bundle verify` parses its limit without importing the media
module (split and join: their signing, hashing and file helpers)."""

from __future__ import annotations

import re
from typing import Final

from .errors import InputError

SIZE_RE: Final = re.compile(r"^(\d+)\s*([KMGT]i?B?|B)?$", re.IGNORECASE)
_UNITS: Final = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str, option: str) -> int:
    """`1048576`, `700M`, `4G`, `4GiB` (binary units) → bytes, at least 1."""
    match = SIZE_RE.match(text.strip())
    if not match:
        raise InputError(
            f"size {text!r} not understood; expected bytes or a size like 4G or 700M",
            field=option,
        )
    unit = (match.group(2) or "").upper()[:1]
    size = int(match.group(1)) * _UNITS[unit]
    if size < 1:
        raise InputError("size must be at least 1 byte", field=option)
    return size
