"""The observation window of a chunk: earliest and latest observation time of its records."""

from __future__ import annotations

from typing import Any

from ..timeutil import canonical_timestamp

# Sentinels that compare after/before every RFC 3339 string of the toolkit's form.
_NO_FIRST = "\uffff"
_NO_LAST = ""


class ObservationWindow:
    __slots__ = ("first", "last")

    def __init__(self) -> None:
        self.first = _NO_FIRST
        self.last = _NO_LAST

    def add(self, record: dict[str, Any]) -> None:
        observed = record["observed_at"]
        if len(observed) != 27 or observed[26] != "Z":
            observed = canonical_timestamp(observed)
        if observed < self.first:
            self.first = observed
        if observed > self.last:
            self.last = observed
        # Aggregated records cover a span of their own.
        if "first_observed_at" in record:
            first = canonical_timestamp(record["first_observed_at"])
            if first < self.first:
                self.first = first
        if "last_observed_at" in record:
            last = canonical_timestamp(record["last_observed_at"])
            if last > self.last:
                self.last = last

    @property
    def first_observed_at(self) -> str | None:
        return None if self.first == _NO_FIRST else self.first

    @property
    def last_observed_at(self) -> str | None:
        return None if self.last == _NO_LAST else self.last
