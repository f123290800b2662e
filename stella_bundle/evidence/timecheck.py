"""Time rules of an evidence chain, checked on each seal and on its chunk's records.

One definition used by `signals verify-chain` (`evidence.chain`), `bundle verify`
(`verify.chains`) and `function-map verify --evidence` (`evidence.reader`): a verdict must not
rest on a window the signed seals or the sealed records contradict.

Seal rules (`seal_time_findings`): the window is ordered, lies before `sealed_at` (+ skew),
`sealed_at` never goes back along the chain, nothing is dated after the verification time
(+ skew), and, for chunks collected live, a window never starts before the end of an earlier
seal's window (− skew): the live collector appends events as they happen, so a later chunk
holding older evidence was back-filled or its clock jumped. "Live" is a seal whose
`collector.boot_id` is set; imports (`observations import`, `tetragon ingest`, replays) seal
with a null `boot_id` because they write their input in its own order, which need not be time
order (a random-order or concatenated multi-node export), so their windows may overlap.

Record rules (`record_time_findings`, over the `ChunkTimes` of a chunk): each record's
`first_observed_at ≤ observed_at ≤ last_observed_at` (where given), no record observed after
its seal's `sealed_at` (+ skew), and every record time within the seal's window (exactly: the
writer computes the window from these records).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import msgspec

from ..timeutil import canonical_timestamp, format_timestamp, parse_timestamp

if TYPE_CHECKING:  # the record scan imports this module; seals pull in the signing stack
    from ..formats.seal import SealPredicate

# Clocks of the collector and of the verifier drift apart; five minutes is far above NTP-kept
# drift and far below the window of any function map, so it forgives skew and nothing else.
CLOCK_SKEW: Final = dt.timedelta(minutes=5)

# Finding codes (each rule its own name, as in `evidence.report`).
WINDOW_INVERTED: Final = "window_inverted"
OBSERVED_AFTER_SEAL: Final = "observed_after_seal"
SEAL_TIME_REGRESSED: Final = "seal_time_regressed"
EVIDENCE_FROM_FUTURE: Final = "evidence_from_future"
WINDOW_BEFORE_PREVIOUS: Final = "window_before_previous"
RECORD_WINDOW_INVERTED: Final = "record_window_inverted"
OBSERVED_OUTSIDE_RECORD_WINDOW: Final = "observed_outside_record_window"
RECORD_AFTER_SEAL: Final = "record_after_seal"
RECORD_OUTSIDE_SEAL_WINDOW: Final = "record_outside_seal_window"

TIME_CODES: Final = frozenset(
    (
        WINDOW_INVERTED,
        OBSERVED_AFTER_SEAL,
        SEAL_TIME_REGRESSED,
        EVIDENCE_FROM_FUTURE,
        WINDOW_BEFORE_PREVIOUS,
        RECORD_WINDOW_INVERTED,
        OBSERVED_OUTSIDE_RECORD_WINDOW,
        RECORD_AFTER_SEAL,
        RECORD_OUTSIDE_SEAL_WINDOW,
    )
)


@dataclass(frozen=True)
class TimeFinding:
    code: str
    message: str


@dataclass
class ChainTimes:
    """What the seal rules remember along a chain: the previous `sealed_at` and the latest
    window end met so far (an empty chunk in between does not reset it)."""

    sealed_at: str | None = None
    window_end: str | None = None

    def advance(self, predicate: SealPredicate) -> None:
        self.sealed_at = predicate.sealed_at
        last = predicate.last_observed_at
        if last and (
            self.window_end is None or parse_timestamp(last) > parse_timestamp(self.window_end)
        ):
            self.window_end = last


def seal_time_findings(
    predicate: SealPredicate, previous: ChainTimes, now: dt.datetime
) -> list[TimeFinding]:
    """The time rules one seal breaks, given what the chain's earlier seals said and the
    verification time; the caller then calls `previous.advance(predicate)`."""
    findings: list[TimeFinding] = []
    previous_sealed_at = previous.sealed_at
    sealed_at = parse_timestamp(predicate.sealed_at)
    first = _optional(predicate.first_observed_at)
    last = _optional(predicate.last_observed_at)
    if first is not None and last is not None and first > last:
        findings.append(
            TimeFinding(
                WINDOW_INVERTED,
                f"window starts at {predicate.first_observed_at}, after its end "
                f"{predicate.last_observed_at}",
            )
        )
    for label, moment, text in (
        ("first", first, predicate.first_observed_at),
        ("last", last, predicate.last_observed_at),
    ):
        if moment is not None and moment > _plus_skew(sealed_at):
            findings.append(
                TimeFinding(
                    OBSERVED_AFTER_SEAL,
                    f"{label}_observed_at {text} is after the seal's sealed_at "
                    f"{predicate.sealed_at} (allowed clock skew {_minutes(CLOCK_SKEW)})",
                )
            )
            break
    if previous_sealed_at is not None and sealed_at < parse_timestamp(previous_sealed_at):
        findings.append(
            TimeFinding(
                SEAL_TIME_REGRESSED,
                f"sealed_at {predicate.sealed_at} is before the previous seal's "
                f"{previous_sealed_at}",
            )
        )
    if (
        first is not None
        and predicate.collector.boot_id is not None
        and previous.window_end is not None
        and first < _minus_skew(parse_timestamp(previous.window_end))
    ):
        findings.append(
            TimeFinding(
                WINDOW_BEFORE_PREVIOUS,
                f"window starts at {predicate.first_observed_at}, before the end "
                f"{previous.window_end} of an earlier seal's window (allowed clock skew "
                f"{_minutes(CLOCK_SKEW)}): older evidence was added after newer",
            )
        )
    latest = max(m for m in (sealed_at, first, last) if m is not None)
    if latest > _plus_skew(now):
        findings.append(
            TimeFinding(
                EVIDENCE_FROM_FUTURE,
                f"seal dated up to {format_timestamp(latest)}, after the verification time "
                f"{format_timestamp(now)} (allowed clock skew {_minutes(CLOCK_SKEW)})",
            )
        )
    return findings


class _Times(msgspec.Struct):
    """The top-level times of a record line; every other field is skipped unread."""

    observed_at: str
    first_observed_at: str | None = None
    last_observed_at: str | None = None


_DECODER: Final = msgspec.json.Decoder(_Times)
_NO_START: Final = "\uffff"  # sorts after every comparable timestamp
_CANONICAL_LENGTH: Final = 27  # 2026-01-23T00:00:00.000000Z


class ChunkTimes:
    """The record times of one chunk: earliest start, latest end, latest `observed_at`, and
    the first record whose own window is inverted or misses its `observed_at`.

    A start is `first_observed_at` or `observed_at`, an end `last_observed_at` or `observed_at`.
    Folding is idempotent (minimum, maximum, first fault), so a fast path that gives up on a
    block and leaves it to a slower one may already have folded part of it. Records whose times
    are not RFC 3339 are skipped: the record format is the schemas step's rule. Memory is
    constant whatever the chunk holds.
    """

    __slots__ = ("_tail", "bad_record", "end", "latest_observed", "start")

    def __init__(self) -> None:
        self.start = _NO_START
        self.end = ""
        self.latest_observed = ""
        self.bad_record: tuple[str, str] | None = None  # code, message
        self._tail = b""

    def add(self, observed: str, first: str | None, last: str | None) -> None:
        """One record, its times as written."""
        try:
            moment = canonical_timestamp(observed)
            start = canonical_timestamp(first) if first else moment
            end = canonical_timestamp(last) if last else moment
        except (ValueError, OverflowError):
            return
        if moment > self.latest_observed:
            self.latest_observed = moment
        if start < self.start:
            self.start = start
        if end > self.end:
            self.end = end
        if self.bad_record is None and (start > moment or moment > end):
            self._note_bad(observed, first, last, start > end)

    def add_observed(self, observed: list[str]) -> tuple[str, str] | None:
        """Records with `observed_at` only (the common case): folded at C speed when every
        time is in the toolkit's own fixed-width form, which orders as a string; then the
        earliest and latest of them (for a caller that needs them too), else None."""
        if not observed:
            return None
        joined = "".join(observed)
        if len(joined) != _CANONICAL_LENGTH * len(observed) or joined[
            _CANONICAL_LENGTH - 1 :: _CANONICAL_LENGTH
        ].count("Z") != len(observed):
            for moment in observed:
                self.add(moment, None, None)
            return None
        low, high = min(observed), max(observed)
        if low < self.start:
            self.start = low
        if high > self.end:
            self.end = high
        if high > self.latest_observed:
            self.latest_observed = high
        return low, high

    def _note_bad(self, observed: str, first: str | None, last: str | None, inverted: bool) -> None:
        if inverted:
            self.bad_record = (
                RECORD_WINDOW_INVERTED,
                f"a record's first_observed_at {first} is after its last_observed_at {last}",
            )
        else:
            self.bad_record = (
                OBSERVED_OUTSIDE_RECORD_WINDOW,
                f"a record's observed_at {observed} lies outside its own window "
                f"[{first or observed}, {last or observed}]",
            )

    def feed(self, block: bytes) -> None:
        """Decompressed NDJSON bytes cut anywhere (a partial last line waits for the next);
        for readers that do not parse the records otherwise (`verify-chain`)."""
        data = self._tail + block if self._tail else block
        cut = data.rfind(b"\n")
        if cut < 0:
            self._tail = data
            return
        self._tail = data[cut + 1 :]
        self._lines(data[: cut + 1])

    def finish(self) -> ChunkTimes:
        if self._tail:
            self._lines(self._tail)
            self._tail = b""
        return self

    def _lines(self, data: bytes) -> None:
        try:
            records = _DECODER.decode_lines(data)
        except (msgspec.DecodeError, RecursionError):
            for line in data.split(b"\n"):
                self._line(line)
            return
        if b"_observed_at" not in data:  # no record has first/last: the vector path
            self.add_observed([record.observed_at for record in records])
            return
        for record in records:
            self.add(record.observed_at, record.first_observed_at, record.last_observed_at)

    def _line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            record = _DECODER.decode(line)
        except (msgspec.DecodeError, RecursionError):
            return  # not a record: judged by the record format, not here
        self.add(record.observed_at, record.first_observed_at, record.last_observed_at)


def record_time_findings(times: ChunkTimes, predicate: SealPredicate) -> list[TimeFinding]:
    """The record rules a chunk breaks against its seal (see the module docstring)."""
    findings: list[TimeFinding] = []
    if times.bad_record is not None:
        findings.append(TimeFinding(*times.bad_record))
    if not times.end:
        return findings  # no dated record
    sealed_at = parse_timestamp(predicate.sealed_at)
    if parse_timestamp(times.latest_observed) > _plus_skew(sealed_at):
        findings.append(
            TimeFinding(
                RECORD_AFTER_SEAL,
                f"a record is observed at {times.latest_observed}, after the seal's sealed_at "
                f"{predicate.sealed_at} (allowed clock skew {_minutes(CLOCK_SKEW)})",
            )
        )
    first, last = predicate.first_observed_at, predicate.last_observed_at
    if (
        first is None
        or last is None
        or times.start < canonical_timestamp(first)
        or times.end > canonical_timestamp(last)
    ):
        findings.append(
            TimeFinding(
                RECORD_OUTSIDE_SEAL_WINDOW,
                f"the records span [{times.start}, {times.end}], outside the seal's window "
                f"[{first}, {last}]",
            )
        )
    return findings


def latest_sealable(now: dt.datetime | None = None) -> str:
    """The latest `observed_at` a writer may seal at `now` (default: the clock), in the
    toolkit's form (which orders as a string): later records break `record_after_seal` and
    `evidence_from_future` for their whole chunk, so a writer of outside records (an import,
    the Tetragon bridge) refuses or drops them instead of sealing them."""
    return format_timestamp(_plus_skew(now or dt.datetime.now(dt.UTC)))


def _plus_skew(moment: dt.datetime) -> dt.datetime:
    """`moment` + CLOCK_SKEW, saturating at the end of the calendar (year 9999)."""
    try:
        return moment + CLOCK_SKEW
    except OverflowError:
        return dt.datetime.max.replace(tzinfo=dt.UTC)


def _minus_skew(moment: dt.datetime) -> dt.datetime:
    try:
        return moment - CLOCK_SKEW
    except OverflowError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)


def _optional(value: str | None) -> dt.datetime | None:
    return parse_timestamp(value) if value else None


def _minutes(delta: dt.timedelta) -> str:
    return f"{int(delta.total_seconds() // 60)} min"
