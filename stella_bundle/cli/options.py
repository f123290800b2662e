"""Parsing of option values shared by several commands; errors name the option."""

from __future__ import annotations

import datetime as dt

from ..timeutil import parse_time_field


def time_option(value: str | None, option: str) -> dt.datetime | None:
    """An RFC 3339 option value (`--from`, `--to`…) as an aware UTC datetime, or None."""
    return parse_time_field(value, option)
