"""probes.lock.json: the sha256 of every precompiled probe object, its programs and needs.

The airgap loader reads object bytes once, checks them against the lock and hands exactly
those bytes to libbpf, so what was checked is what runs. `python -m
stella_bundle.collector.lockfile OBJ_DIR LOCK...` is used by probes/build.sh.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..errors import MalformedDocumentError, ProbeIntegrityError
from ..fsutil import write_bytes_atomic
from ..jsonio import load_json_object

LOCK_FORMAT: Final = "stella-probes-lock/v1"
LOCK_NAME: Final = "probes.lock.json"
PACKAGE_BPF_DIR: Final = Path(__file__).parent / "bpf"

# Kernel features each attach type needs: recorded in the lock, checked by `stella probes doctor`.
# Each attach type is itself a feature, detected by a trial load and attach of that type with a
# BPF cookie (collector/trial.py); classic tracepoints also need tracefs for their ids.
ATTACH_TYPE_FEATURES: Final[dict[str, tuple[str, ...]]] = {
    "uprobe": ("uprobe",),
    "uretprobe": ("uretprobe",),
    "usdt": ("usdt",),
    "kprobe": ("kprobe",),
    "kretprobe": ("kretprobe",),
    "tracepoint": ("tracepoint", "tracefs"),
    "raw_tracepoint": ("raw_tracepoint",),
    "tp_btf": ("tp_btf",),
    "fentry": ("fentry",),
    "fexit": ("fexit",),
}
BASE_FEATURES: Final = ("btf", "bpf_syscall", "ringbuf", "bpf_cookie")


@dataclass(frozen=True)
class ProgramInfo:
    name: str
    section: str
    attach_type: str


@dataclass(frozen=True)
class LockedObject:
    name: str
    sha256: str
    size: int
    programs: tuple[ProgramInfo, ...]
    min_kernel_features: tuple[str, ...]

    def program(self, name: str) -> ProgramInfo:
        for program in self.programs:
            if program.name == name:
                return program
        raise KeyError(name)


@dataclass(frozen=True)
class ProbeLock:
    path: Path
    objects: dict[str, LockedObject]
    probe_set_sha256: str


def attach_type_of(section: str) -> str:
    """The attach type a program's ELF section names (uprobe, uretprobe, usdt, tp_btf...)."""
    return section.split("/", 1)[0].split(".", 1)[0]


def programs_of(data: bytes) -> tuple[ProgramInfo, ...]:
    """Programs in a BPF ELF object: global FUNC symbols in executable, non-.text sections."""
    # Build-time only: the loader never needs pyelftools.
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    elf = ELFFile(io.BytesIO(data))
    symtab = elf.get_section_by_name(".symtab")
    if not isinstance(symtab, SymbolTableSection):
        raise MalformedDocumentError("BPF object has no .symtab")
    found: list[ProgramInfo] = []
    for symbol in symtab.iter_symbols():
        if symbol["st_info"]["type"] != "STT_FUNC" or symbol["st_info"]["bind"] != "STB_GLOBAL":
            continue
        index = symbol["st_shndx"]
        if not isinstance(index, int):
            continue
        section = elf.get_section(index).name
        if section == ".text":
            continue
        found.append(ProgramInfo(symbol.name, section, attach_type_of(section)))
    return tuple(sorted(found, key=lambda p: p.name))


def btf_sections(data: bytes) -> dict[str, list[str]]:
    """Section -> the CO-RE relocations libbpf applies to its programs at load (build time)."""
    from elftools.elf.elffile import ELFFile

    from .btfinfo import core_relocations

    elf = ELFFile(io.BytesIO(data))
    btf, ext = elf.get_section_by_name(".BTF"), elf.get_section_by_name(".BTF.ext")
    if btf is None or ext is None:
        return {}
    out: dict[str, list[str]] = {}
    for relocation in core_relocations(btf.data(), ext.data()):
        entries = out.setdefault(relocation.section, [])
        if relocation.describe() not in entries:
            entries.append(relocation.describe())
    return {section: sorted(entries) for section, entries in sorted(out.items())}


def describe_object(name: str, data: bytes) -> dict[str, Any]:
    from .btfinfo import btf_target

    programs = programs_of(data)
    needs = set(BASE_FEATURES)
    optional: set[str] = set()
    for program in programs:
        # Programs are alternatives the collector picks among by what loads here (a category's
        # fallback order), so attach types are optional; what every program needs is not.
        optional.update(ATTACH_TYPE_FEATURES.get(program.attach_type, ()))
    return {
        "name": name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "programs": [
            {"name": p.name, "section": p.section, "attach_type": p.attach_type}
            | ({"btf_target": target} if (target := btf_target(p.section)) else {})
            for p in programs
        ],
        # Recorded so a reviewer sees which kernel types and fields each program reads, and
        # tests check them against a kernel's BTF where the programs cannot run (fentry here).
        "core_relocations": btf_sections(data),
        "min_kernel_features": sorted(needs),
        "optional_kernel_features": sorted(optional - needs),
    }


def probe_set_digest(objects: list[dict[str, Any]]) -> str:
    """One digest naming the whole probe set (recorded in every seal's collector info)."""
    listing = "".join(
        f"{o['sha256']}  {o['name']}\n" for o in sorted(objects, key=lambda o: o["name"])
    )
    return hashlib.sha256(listing.encode()).hexdigest()


def build_lock(object_dir: Path, toolchain: dict[str, str]) -> bytes:
    objects = [describe_object(p.name, p.read_bytes()) for p in sorted(object_dir.glob("*.bpf.o"))]
    if not objects:
        raise MalformedDocumentError("no *.bpf.o objects found", path=object_dir)
    document = {
        "format": LOCK_FORMAT,
        "toolchain": toolchain,
        "objects": objects,
        "probe_set_sha256": probe_set_digest(objects),
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def load_lock(path: Path) -> ProbeLock:
    return parse_lock(load_json_object(path, "a probes lock file"), path)


def parse_lock(document: Any, path: str | Path) -> ProbeLock:
    """The lock's one reading: the airgap loader's and `bundle verify`'s (a bundle's
    probes/probes.lock.json). An object named twice is refused: which entry counts would be
    a reader's accident."""
    if not isinstance(document, dict):
        raise MalformedDocumentError("expected a probes lock file (a JSON object)", path=path)
    if document.get("format") != LOCK_FORMAT:
        raise MalformedDocumentError(f"expected format {LOCK_FORMAT!r}", path=path, field="format")
    objects: dict[str, LockedObject] = {}
    raw_objects = document.get("objects")
    if not isinstance(raw_objects, list):
        raise MalformedDocumentError("expected a list of objects", path=path, field="objects")
    for index, entry in enumerate(raw_objects):
        field = f"objects[{index}]"
        try:
            sha = str(entry["sha256"])
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise ValueError("sha256 is not 64 lowercase hex digits")
            name = str(entry["name"])
            if name in objects:
                raise ValueError(f"object {name!r} is listed twice")
            objects[name] = LockedObject(
                name=name,
                sha256=sha,
                size=int(entry["size"]),
                programs=tuple(
                    ProgramInfo(str(p["name"]), str(p["section"]), str(p["attach_type"]))
                    for p in entry["programs"]
                ),
                min_kernel_features=tuple(str(f) for f in entry.get("min_kernel_features", [])),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedDocumentError(
                f"malformed object entry ({exc})", path=path, field=field
            ) from exc
    return ProbeLock(Path(path), objects, str(document.get("probe_set_sha256", "")))


def verified_bytes(lock: ProbeLock, directory: Path, name: str) -> bytes:
    """The object's bytes, only when their sha256 is the one the lock records."""
    entry = lock.objects.get(name)
    if entry is None:
        raise ProbeIntegrityError(
            f"probe object {name} is not listed in the lock file", path=lock.path, field="objects"
        )
    path = directory / name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProbeIntegrityError(f"cannot read probe object ({exc.strerror})", path=path) from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise ProbeIntegrityError(
            f"sha256 {digest} does not match the lock ({entry.sha256}); refusing to load",
            path=path,
        )
    return data


def main(argv: list[str]) -> int:
    """`lockfile OBJ_DIR LOCK [LOCK...] --clang VERSION`: write the lock to every LOCK path."""
    object_dir = Path(argv[0])
    toolchain = {"clang": argv[argv.index("--clang") + 1]} if "--clang" in argv else {}
    targets = [a for a in argv[1:] if not a.startswith("--") and a not in toolchain.values()]
    data = build_lock(object_dir, toolchain)
    for target in targets:
        write_bytes_atomic(target, data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
