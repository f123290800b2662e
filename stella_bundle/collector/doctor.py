"""What `probes doctor` prints: the kernel features found on this host, every attach type's
trial (available or not, the errno and its meaning) and the attach type each probe category
uses and why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import MalformedDocumentError
from ..formats.flat import read_flat
from .features import CategoryChoice, Feature, KernelFeatures
from .trial import TrialResult

_T = TypeVar("_T")


@dataclass(frozen=True)
class _FeatureFields:
    available: bool
    detail: str


@dataclass(frozen=True)
class _TrialFields:
    available: bool
    stage: str
    errno: int | None
    errno_name: str | None
    meaning: str


@dataclass(frozen=True)
class _ChoiceFields:
    attach_type: str | None
    reason: str


@dataclass(frozen=True)
class KernelDoctor:
    features: tuple[Feature, ...]
    attach_types: tuple[TrialResult, ...]
    categories: tuple[CategoryChoice, ...]

    @classmethod
    def of(cls, features: KernelFeatures, choices: list[CategoryChoice]) -> KernelDoctor:
        return cls(
            tuple(features.features.values()), tuple(features.attach_types.values()), tuple(choices)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": {
                f.name: {"available": f.available, "detail": f.detail} for f in self.features
            },
            "attach_types": {
                t.attach_type: {
                    "available": t.available,
                    "stage": t.stage,
                    "errno": t.errno,
                    "errno_name": t.errno_name,
                    "meaning": t.meaning,
                }
                for t in self.attach_types
            },
            "categories": {
                c.category: {"attach_type": c.attach_type, "reason": c.reason}
                for c in self.categories
            },
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> KernelDoctor:
        if not isinstance(data, dict) or set(data) != {"features", "attach_types", "categories"}:
            raise MalformedDocumentError(
                "expected features, attach_types and categories", path=source, field="doctor"
            )
        features = _keyed(data, "features", _FeatureFields, source, lambda k, v: Feature(k, **v))
        trials = _keyed(data, "attach_types", _TrialFields, source, _trial(source))
        categories = _keyed(
            data, "categories", _ChoiceFields, source, lambda k, v: CategoryChoice(k, **v)
        )
        return cls(features, trials, categories)


def _trial(source: str | Path | None) -> Callable[[str, dict[str, Any]], TrialResult]:
    def make(name: str, values: dict[str, Any]) -> TrialResult:
        claimed = values.pop("errno_name")
        trial = TrialResult(name, **values)
        if claimed != trial.errno_name:  # derived from errno: a document saying otherwise lies
            raise MalformedDocumentError(
                f"expected {trial.errno_name!r} for errno {trial.errno}",
                path=source,
                field=f"attach_types.{name}.errno_name",
            )
        return trial

    return make


def _keyed(
    data: dict[str, Any],
    key: str,
    fields: type[Any],
    source: str | Path | None,
    make: Callable[[str, dict[str, Any]], _T],
) -> tuple[_T, ...]:
    entries = data[key]
    if not isinstance(entries, dict):
        raise MalformedDocumentError("expected an object", path=source, field=key)
    return tuple(
        make(name, read_flat(fields, value, source, f"{key}.{name}"))
        for name, value in entries.items()
    )
