"""The named steps of offline bundle verification, in DESIGN.md order.

A step's outcome is one line of the report; the first failing step decides the exit code and
is named on stderr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import StellaError


@dataclass(frozen=True)
class StepSpec:
    key: str
    title: str


STEPS: tuple[StepSpec, ...] = (
    StepSpec("trust-root", "trust root is current"),
    StepSpec("archive", "hostile-archive checks"),
    StepSpec("manifest-signature", "manifest signature (builder role)"),
    StepSpec("file-list", "strict file list and digests"),
    StepSpec("schemas", "schema validation of every document and record"),
    StepSpec("function-map-signature", "function-map signature (function-map role)"),
    StepSpec("evidence-chains", "evidence chain reconstruction (collector role)"),
    StepSpec("coverage", "function-map verification over the chain's records"),
)
STEP_KEYS = tuple(step.key for step in STEPS)


@dataclass
class StepOutcome:
    spec: StepSpec
    status: str = "pending"  # passed | failed | skipped
    message: str = ""
    error: StellaError | None = None
    notes: list[str] = field(default_factory=list)

    def fail(self, error: StellaError) -> None:
        """Keep the first failure (the one that explains the rest); count the others."""
        if self.error is None:
            self.error = error
            self.status = "failed"
            self.message = error.describe()
        else:
            self.notes.append(error.describe())

    def finish(self, message: str) -> None:
        if self.status == "pending":
            self.status = "passed"
            self.message = message

    def skip(self, reason: str) -> None:
        if self.status == "pending":
            self.status = "skipped"
            self.message = reason

    def to_dict(self) -> dict[str, Any]:
        message = self.message
        if self.notes:
            message += f" (and {len(self.notes)} more: {self.notes[0]}"
            message += ", …)" if len(self.notes) > 1 else ")"
        document: dict[str, Any] = {"name": self.spec.key, "status": self.status}
        document["title"] = self.spec.title
        if message:
            document["message"] = message
        if self.error is not None:
            document["error_type"] = type(self.error).__name__
            document["exit_code"] = self.error.exit_code
        return document


def new_outcomes() -> dict[str, StepOutcome]:
    return {spec.key: StepOutcome(spec) for spec in STEPS}


def first_failure(outcomes: dict[str, StepOutcome]) -> StepOutcome | None:
    for key in STEP_KEYS:
        if outcomes[key].status == "failed":
            return outcomes[key]
    return None
