"""Time rules of an evidence chain, checked on each seal as it is met.

One definition used by `signals verify-chain` (`evidence.chain`) and `bundle verify`
(`bundle.chains`): a verdict must not rest on a window the signed seals contradict.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from ..timeutil import format_timestamp, parse_timestamp
from .seal import SealPredicate

# Clocks of the collector and of the verifier drift apart; five minutes is far above NTP-kept
# drift and far below the window of any function map, so it forgives skew and nothing else.
CLOCK_SKEW: Final = dt.timedelta(minutes=5)

# Finding codes (each rule its own name, as in `evidence.report`).
WINDOW_INVERTED: Final = "window_inverted"
OBSERVED_AFTER_SEAL: Final = "observed_after_seal"
SEAL_TIME_REGRESSED: Final = "seal_time_regressed"
EVIDENCE_FROM_FUTURE: Final = "evidence_from_future"


@dataclass(frozen=True)
class TimeFinding:
    code: str
    message: str


def seal_time_findings(
    predicate: SealPredicate, previous_sealed_at: str | None, now: dt.datetime
) -> list[TimeFinding]:
    """The time rules one seal breaks, given the chain's previous seal time and the
    verification time: window order, window within `sealed_at` (+ skew), `sealed_at` monotone
    along the chain, nothing after the verification time (+ skew)."""
    findings: list[TimeFinding] = []
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
        if moment is not None and moment > sealed_at + CLOCK_SKEW:
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
    latest = max(m for m in (sealed_at, first, last) if m is not None)
    if latest > now + CLOCK_SKEW:
        findings.append(
            TimeFinding(
                EVIDENCE_FROM_FUTURE,
                f"seal dated up to {format_timestamp(latest)}, after the verification time "
                f"{format_timestamp(now)} (allowed clock skew {_minutes(CLOCK_SKEW)})",
            )
        )
    return findings


def _optional(value: str | None) -> dt.datetime | None:
    return parse_timestamp(value) if value else None


def _minutes(delta: dt.timedelta) -> str:
    return f"{int(delta.total_seconds() // 60)} min"
