"""RFC 3339 UTC timestamps with `Z` and microseconds (DESIGN.md §4)."""

from __future__ import annotations

import datetime as dt
import os
import re

from .errors import InputError

# RFC 3339 date-time as this toolkit accepts it: ASCII digits only (Python's \d matches any
# Unicode digit), `T` and `Z` upper case, at most nanosecond precision.
_RFC3339_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]{1,9})?"
    r"(?:Z|[+-]([0-9]{2}):([0-9]{2}))"
)


def format_timestamp(moment: dt.datetime) -> str:
    """`2026-01-23T00:00:00.000000Z`; naive datetimes are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    m = moment.astimezone(dt.UTC)
    # Not strftime: its %Y does not pad years before 1000 to four digits on glibc, and the
    # result would not parse back.
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
        f".{m.microsecond:06d}Z"
    )


def canonical_timestamp(value: str) -> str:
    """The toolkit's form (`…SS.ffffffZ`) of a valid RFC 3339 timestamp; ValueError otherwise.

    A value already in that form is returned as it is, without parsing: stores, the bundle's
    time span and the coverage scan compare canonical strings, and most values are canonical.
    """
    if len(value) == 27 and value[19] == "." and value.endswith("Z"):
        return value
    return format_timestamp(parse_timestamp(value))


def parse_timestamp(value: object) -> dt.datetime:
    """Parse an RFC 3339 timestamp (any offset, `Z` allowed) into an aware UTC datetime."""
    if not isinstance(value, str):
        raise ValueError(f"expected an RFC 3339 timestamp string, found {type(value).__name__}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}") from exc
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no time zone; expected Z or an offset")
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError as exc:  # 9999-12-31T23:59:59-23:59 is past year 9999 in UTC
        raise ValueError(f"timestamp {value!r} is out of range once moved to UTC") from exc


def parse_time_field(value: str | None, field: str) -> dt.datetime | None:
    """An RFC 3339 value given for `field` (a CLI option, an API parameter) as an aware UTC
    datetime, or None; a bad value is an InputError naming the field."""
    if value is None:
        return None
    try:
        moment = parse_timestamp(value)
    except ValueError as exc:
        raise InputError(str(exc), field=field) from exc
    # `parse_timestamp` (datetime.fromisoformat) also reads ISO 8601 forms RFC 3339 does not
    # have (20260101T000000Z, 2026-W01-1, a lower-case z, no seconds): a value given by a
    # person must be what a record's timestamp may be, so both are read alike.
    if not is_rfc3339_timestamp(value):
        raise InputError(
            f"not an RFC 3339 timestamp: {value!r} (expected YYYY-MM-DDTHH:MM:SS[.ffffff] "
            "then Z or an offset such as +02:00)",
            field=field,
        )
    return moment


def check_window(start: dt.datetime | None, end: dt.datetime | None) -> None:
    """A window whose start is after its end is a mistake (the bounds swapped), never an
    empty question: refused wherever a window is given (CLI options, API parameters)."""
    if start is not None and end is not None and start > end:
        raise InputError(
            f"from ({format_timestamp(start)}) is later than to ({format_timestamp(end)})",
            field="from",
        )


def is_rfc3339_timestamp(value: object) -> bool:
    """True for a syntactically and calendrically valid RFC 3339 timestamp.

    Leap seconds (`:60`) are refused: `parse_timestamp` (datetime) cannot represent them.
    """
    if not isinstance(value, str):
        return False
    match = _RFC3339_RE.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second, offset_hour, offset_minute = match.groups()
    try:
        local = dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError:
        return False
    if offset_hour is None:
        return True
    if int(offset_hour) > 23 or int(offset_minute) > 59:
        return False
    # Valid only if it is a time in UTC too (parse_timestamp moves it there): an offset may
    # push the first or last day of the calendar out of range.
    offset = dt.timedelta(hours=int(offset_hour), minutes=int(offset_minute))
    try:
        local.replace(tzinfo=dt.timezone(-offset if value[-6] == "-" else offset)).astimezone(
            dt.UTC
        )
    except OverflowError:
        return False
    return True


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# The last second a timestamp of ours can name (9999-12-31T23:59:59Z).
_LAST_EPOCH_SECOND = 253_402_300_799


def build_time() -> dt.datetime:
    """`SOURCE_DATE_EPOCH` when set (reproducible builds), else now.

    Its value is what `date +%s` prints (reproducible-builds.org): decimal digits only. `int`
    took `' 12'`, `'+12'` and `'1_000'`, and raised on anything else, or on a year past 9999,
    as an internal error of `function-map generate` and `bundle build`."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return utc_now()
    if not epoch.isascii() or not epoch.isdigit() or int(epoch) > _LAST_EPOCH_SECOND:
        raise InputError(
            f"expected whole seconds since 1970-01-01 as `date +%s` prints them, at most "
            f"{_LAST_EPOCH_SECOND} (9999-12-31), found {epoch[:40]!r}",
            field="SOURCE_DATE_EPOCH (environment variable)",
        )
    return dt.datetime.fromtimestamp(int(epoch), dt.UTC)
