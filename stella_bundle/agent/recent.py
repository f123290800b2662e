"""Periodic verification of the last window, in bounded memory, with the verifier's own rule.

The runbook verifies "every 30 minutes, the last hour" (twice the map's coverage window); the
agent does the same on what it just wrote. Which nodes were observed in a window depends only on
each node's latest observation, so the latest record per (node, probe type) is kept (memory:
the map's size, not the traffic) and handed to `coverage.engine.verify_observations`: the
observation rate and the unexpected symbols are computed exactly as `function-map verify` does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from ..coverage import VerificationResult, VerifyOptions, verify_observations
from ..formats.seal import ProbeFailure, ProbeReattachment
from ..functionmap.load import LoadedFunctionMap

# The runbook's ratio: verify the last hour of a 30-minute coverage window.
LOOKBACK_WINDOWS = 2


class RecentObservations:
    """The latest record of each (node, probe type) written to one chain."""

    def __init__(self, function_map: LoadedFunctionMap) -> None:
        self.function_map = function_map
        self.lookback = dt.timedelta(
            seconds=LOOKBACK_WINDOWS * function_map.coverage.window_seconds
        )
        self._latest: dict[tuple[str, str], dict[str, Any]] = {}

    def remember(self, record: dict[str, Any]) -> None:
        self._latest[(record["node_hash"], record["probe_type"])] = record

    def snapshot(self) -> list[dict[str, Any]]:
        """The remembered records, taken on the thread that remembers them."""
        return list(self._latest.values())

    def verify(
        self, now: dt.datetime | None = None, records: list[dict[str, Any]] | None = None
    ) -> VerificationResult:
        """Verify the lookback window ending `now` (the records were validated when written);
        `records`: a `snapshot`, for a verification on another thread."""
        end = now or dt.datetime.now(dt.UTC)
        options = VerifyOptions(window_from=end - self.lookback, window_to=end)
        return verify_observations(
            self.function_map,
            self.snapshot() if records is None else records,
            options,
            validated=True,
        )


class RecordingSink:
    """An evidence sink that also remembers each record for `RecentObservations`."""

    def __init__(self, inner: Any, recent: RecentObservations) -> None:
        self.inner = inner
        self.recent = recent

    def append(self, record: dict[str, Any]) -> Any:
        result = self.inner.append(record)  # validates: only written records are remembered
        self.recent.remember(record)
        return result

    def add_loss(
        self, *, ring_buffer_dropped: int = 0, sampled_out: int = 0, filtered_out: int = 0
    ) -> Any:
        return self.inner.add_loss(
            ring_buffer_dropped=ring_buffer_dropped,
            sampled_out=sampled_out,
            filtered_out=filtered_out,
        )

    def add_probe_failures(self, failures: Sequence[ProbeFailure]) -> Any:
        return self.inner.add_probe_failures(failures)

    def add_probe_reattachments(self, items: Sequence[ProbeReattachment]) -> Any:
        return self.inner.add_probe_reattachments(items)

    def tick(self) -> Any:
        return self.inner.tick()

    def close(self, final: bool = True) -> Any:
        return self.inner.close(final=final)
