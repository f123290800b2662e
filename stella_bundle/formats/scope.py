"""The workload a function map is about (DESIGN.md §4 `scope`, §6): whose records count.

One definition used by the map format (`from_dict`/`to_dict`), the collector (which selectors
it turns into in-kernel filter keys) and the verifier (`matches`, on the context a record
carries in `details.scope`). Probes on a shared library fire for every process on the host:
without a scope, a client calling the server's TLS functions satisfies the server's map.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..digests import PREFIXED_SHA256_RE
from ..errors import SchemaValidationError

# The selectors, in the order they are written and described.
SCOPE_FIELDS: Final = ("executable", "systemd_unit", "container_name", "image_digest")
# Where a record carries the workload context that matched: `details.scope`, an object with
# the selector fields of the map that collected it (details are open, so the record format,
# its fast readers and the stores need no new top-level field).
RECORD_CONTEXT_KEY: Final = "scope"

# systemd unit names (systemd.unit(5)): the unit types that own processes in a cgroup.
_UNIT_RE: Final = re.compile(r"^[A-Za-z0-9:_.\\@-]+\.(?:service|scope|slice)\Z")

NO_SCOPE_WARNING: Final = (
    "the function map names no scope: records of every process on the host count as the "
    "service's (a client calling the same library functions satisfies the map); add a scope "
    "(executable, systemd_unit, container_name or image_digest)"
)


def _fail(message: str, source: str | Path | None, field_name: str) -> SchemaValidationError:
    return SchemaValidationError(message, path=source, field=field_name)


@dataclass(frozen=True)
class Scope:
    """Selectors of the workload; every selector given must match (they narrow each other)."""

    executable: str | None = None  # absolute path of the process's executable
    systemd_unit: str | None = None  # e.g. nginx.service: its cgroup and the cgroups below
    container_name: str | None = None  # glob pattern over container names, e.g. web-*
    image_digest: str | None = None  # sha256:<hex> of the container's image

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> Scope:
        if not isinstance(data, dict):
            raise _fail("expected an object", source, "scope")
        extra = sorted(data.keys() - set(SCOPE_FIELDS))
        if extra:
            raise _fail(
                f"unknown field (allowed: {', '.join(SCOPE_FIELDS)})", source, f"scope.{extra[0]}"
            )
        if not data:
            raise _fail(f"name at least one of {', '.join(SCOPE_FIELDS)}", source, "scope")
        for name, value in data.items():
            if not isinstance(value, str) or not value:
                raise _fail("expected a non-empty string", source, f"scope.{name}")
        executable = data.get("executable")
        if executable is not None and not executable.startswith("/"):
            raise _fail("expected an absolute path", source, "scope.executable")
        unit = data.get("systemd_unit")
        if unit is not None and not _UNIT_RE.match(unit):
            raise _fail(
                "expected a unit name such as nginx.service (.service, .scope or .slice)",
                source,
                "scope.systemd_unit",
            )
        digest = data.get("image_digest")
        if digest is not None and not PREFIXED_SHA256_RE.match(digest):
            raise _fail(
                "expected 'sha256:' followed by 64 lowercase hex digits",
                source,
                "scope.image_digest",
            )
        if unit is not None and ("container_name" in data or "image_digest" in data):
            raise _fail(
                "a workload runs in a systemd unit or in a container, not both",
                source,
                "scope.systemd_unit",
            )
        return cls(
            executable=executable,
            systemd_unit=unit,
            container_name=data.get("container_name"),
            image_digest=digest,
        )

    def to_dict(self) -> dict[str, str]:
        return {name: value for name in SCOPE_FIELDS if (value := getattr(self, name)) is not None}

    @property
    def container_selected(self) -> bool:
        return self.container_name is not None or self.image_digest is not None

    def describe(self) -> str:
        return ", ".join(f"{name} {value}" for name, value in self.to_dict().items())

    def context_matches(self, context: Any) -> bool:
        """Whether a record's workload context (its `details.scope`) is this workload's."""
        if not isinstance(context, Mapping):
            return False
        for name, wanted in self.to_dict().items():
            value = context.get(name)
            if not isinstance(value, str):
                return False
            if name == "container_name":
                if not fnmatch.fnmatchcase(value, wanted):
                    return False
            elif value != wanted:
                return False
        return True

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether an observation record belongs to the workload (the verifier's rule)."""
        details = record.get("details")
        if not isinstance(details, Mapping):
            return False
        return self.context_matches(details.get(RECORD_CONTEXT_KEY))


def scope_from_predicate(data: Mapping[str, Any], source: str | Path | None) -> Scope | None:
    """The predicate's optional `scope`."""
    if "scope" not in data:
        return None
    return Scope.from_dict(data["scope"], source)
