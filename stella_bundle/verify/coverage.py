"""The coverage step: the function map's own verifier fed record by record from the stream."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from ..attest.verifier import VerifiedStatement
from ..canonical import canonical_bytes
from ..coverage.engine import VerifyOptions, evaluate, new_aggregator
from ..errors import CoverageNotMetError
from ..formats.function_map import FunctionMap
from ..functionmap.load import LoadedFunctionMap
from ..timeutil import parse_timestamp
from .steps import StepOutcome


def map_window(
    function_map: FunctionMap, evidence_end: str | None
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The map's window: its last `window_seconds` up to the end of the evidence."""
    if evidence_end is None:
        return None, None
    end = parse_timestamp(evidence_end)
    try:
        return end - dt.timedelta(seconds=function_map.coverage.window_seconds), end
    except OverflowError:  # a window longer than the calendar (schema: up to 2**53 - 1 s)
        return None, end


class CoverageTally:
    """Per-node state only: memory follows the map's size, never the number of records."""

    def __init__(
        self,
        function_map: FunctionMap,
        verified: VerifiedStatement,
        source: str,
        options: VerifyOptions,
    ) -> None:
        self.loaded = LoadedFunctionMap(
            function_map=function_map,
            statement=verified.statement,
            digest="sha256:" + hashlib.sha256(canonical_bytes(verified.statement)).hexdigest(),
            source=source,
            signed=True,
            signature_checked=True,
            signers=tuple(key.keyid for key in verified.signers),
        )
        self.policy_sha256 = hashlib.sha256(verified.payload).hexdigest()
        self.source = source
        self.options = options
        self.aggregator = new_aggregator(self.loaded, options)
        self.result: dict[str, Any] | None = None

    def add(self, record: dict[str, Any], source: str, line: int) -> None:
        self.aggregator.add_record(record, source, line)

    @property
    def window(self) -> dict[str, str | None]:
        window_from, window_to = self.options.window_strings()
        return {"from": window_from, "to": window_to}

    def evaluate(self, step: StepOutcome) -> None:
        result = evaluate(self.loaded, self.aggregator, self.options)
        self.result = result.to_dict()
        summary = (
            f"observation rate {result.observation_rate:.3f} against a target of "
            f"{result.target_rate:.3f}; {len(result.missing_symbols)} missing, "
            f"{len(result.unexpected_symbols)} unexpected symbol(s)"
        )
        if result.verified:
            step.finish(summary)
        else:
            step.fail(CoverageNotMetError(f"{summary}: {'; '.join(result.failures)}"))
