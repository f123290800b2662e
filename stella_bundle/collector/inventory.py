"""What `probes list` prints: the probe objects of a probe set, each checked against the lock
(a mismatch is shown, not raised: this is an inventory), with their programs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MalformedDocumentError
from ..formats.flat import read_flat, read_list


@dataclass(frozen=True)
class ProgramEntry:
    name: str
    section: str
    attach_type: str


@dataclass(frozen=True)
class ProbeObject:
    name: str
    sha256: str
    status: str  # ok, or REFUSED: why
    programs: tuple[ProgramEntry, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "status": self.status,
            "programs": [
                {"name": p.name, "section": p.section, "attach_type": p.attach_type}
                for p in self.programs
            ],
        }


@dataclass(frozen=True)
class _ObjectFields:
    name: str
    sha256: str
    status: str
    programs: object


@dataclass(frozen=True)
class ProbeInventory:
    directory: str
    probe_set_sha256: str
    objects: tuple[ProbeObject, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "probe_set_sha256": self.probe_set_sha256,
            "objects": [item.to_dict() for item in self.objects],
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> ProbeInventory:
        if not isinstance(data, dict) or set(data) != {"directory", "probe_set_sha256", "objects"}:
            raise MalformedDocumentError(
                "expected directory, probe_set_sha256 and objects", path=source, field="probes"
            )
        if not isinstance(data["directory"], str) or not isinstance(data["probe_set_sha256"], str):
            raise MalformedDocumentError("expected strings", path=source, field="probe_set_sha256")
        objects = []
        for index, item in enumerate(read_list(data["objects"], source, "objects")):
            where = f"objects[{index}]"
            values = read_flat(_ObjectFields, item, source, where)
            programs = tuple(
                ProgramEntry(**read_flat(ProgramEntry, p, source, f"{where}.programs[{i}]"))
                for i, p in enumerate(read_list(values["programs"], source, f"{where}.programs"))
            )
            objects.append(
                ProbeObject(values["name"], values["sha256"], values["status"], programs)
            )
        return cls(data["directory"], data["probe_set_sha256"], tuple(objects))


def probe_inventory(probes_dir: Path | None) -> ProbeInventory:
    """The probe set at `probes_dir` (default: the installed one), each object checked."""
    from .loader import ProbeSet

    probe_set = ProbeSet.open(probes_dir)
    objects = []
    for name, entry in sorted(probe_set.lock.objects.items()):
        try:
            probe_set.verified(name)
            status = "ok"
        except Exception as exc:  # a mismatch is shown, not raised: this is an inventory
            status = f"REFUSED: {exc}"
        programs = tuple(ProgramEntry(p.name, p.section, p.attach_type) for p in entry.programs)
        objects.append(ProbeObject(entry.name, entry.sha256, status, programs))
    return ProbeInventory(str(probe_set.directory), probe_set.lock.probe_set_sha256, tuple(objects))
