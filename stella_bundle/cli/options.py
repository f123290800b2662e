"""Parsing of option values shared by several commands; errors name the option."""

from __future__ import annotations

import datetime as dt

from ..errors import InputError
from ..timeutil import parse_timestamp


def time_option(value: str | None, option: str) -> dt.datetime | None:
    """An RFC 3339 option value (`--from`, `--to`…) as an aware UTC datetime, or None."""
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise InputError(str(exc), field=option) from exc
