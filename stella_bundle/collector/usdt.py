"""USDT probes from a binary's .note.stapsdt (pyelftools), and Python's `python:audit` events.

A USDT probe is a NOP at a known address plus, for is-enabled probes, a 2-byte semaphore the
program tests before preparing the probe's arguments. The collector attaches a uprobe at the
NOP's file offset with the semaphore's file offset as `ref_ctr_offset`: the kernel increments
the semaphore in every process mapping the binary while the probe is attached, and decrements
it on detach, so the instrumented code pays for its arguments only while someone listens.

`python:audit` (CPython's PEP 578 audit hook as a USDT probe, arguments: the event name and the
argument tuple) is offered as an event source: a node names one audit event (`socket.connect`,
`open`...), the event name becomes the observed symbol, and the event's safe arguments (never an
environment, argv or file contents) go into `details`.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from ..errors import CollectorEnvironmentError
from .elfsym import SymbolNotFoundError
from .events import KIND_EXEC, KIND_FILE, KIND_FUNCTION, KIND_NET

AUDIT_PROBE: Final = ("python", "audit")

# x86_64 register names -> byte offset in struct pt_regs (the kernel's layout, stable ABI).
_PT_REGS: Final = (
    "r15",
    "r14",
    "r13",
    "r12",
    "bp",
    "bx",
    "r11",
    "r10",
    "r9",
    "r8",
    "ax",
    "cx",
    "dx",
    "si",
    "di",
    "orig_ax",
    "ip",
    "cs",
    "flags",
    "sp",
    "ss",
)
_REG_ALIASES: Final = {
    **{f"r{n}": f"r{n}" for n in range(8, 16)},
    **{f"r{n}d": f"r{n}" for n in range(8, 16)},
    **{f"r{n}w": f"r{n}" for n in range(8, 16)},
    "rax": "ax",
    "eax": "ax",
    "rbx": "bx",
    "ebx": "bx",
    "rcx": "cx",
    "ecx": "cx",
    "rdx": "dx",
    "edx": "dx",
    "rsi": "si",
    "esi": "si",
    "rdi": "di",
    "edi": "di",
    "rbp": "bp",
    "ebp": "bp",
    "rsp": "sp",
    "esp": "sp",
    "rip": "ip",
}
ARG_CONST: Final = 0
ARG_REG: Final = 1
ARG_REG_DEREF: Final = 2
_ARG_RE = re.compile(
    r"^(?P<size>-?\d+)@(?:\$(?P<imm>-?\d+)|%(?P<reg>\w+)|(?P<off>-?\d*)\(%(?P<base>\w+)\))$"
)


@dataclass(frozen=True)
class UsdtArg:
    """One argument per the note's spec: a constant, a register, or memory at reg+offset."""

    kind: int
    size: int  # bytes; negative = signed
    reg_offset: int  # offset of the register in struct pt_regs
    value: int  # the constant, or the displacement for ARG_REG_DEREF


@dataclass(frozen=True)
class UsdtProbe:
    provider: str
    name: str
    offset: int  # file offset of the probe's NOP (where the uprobe goes)
    semaphore_offset: int  # file offset of the is-enabled semaphore; 0 when there is none
    semaphore_address: int  # its virtual address (tests read it in a live process)
    args: tuple[UsdtArg, ...]
    arg_spec: str

    @property
    def label(self) -> str:
        return f"{self.provider}:{self.name}"


def parse_arg(text: str) -> UsdtArg:
    match = _ARG_RE.match(text)
    if match is None:
        raise ValueError(f"unsupported USDT argument {text!r}")
    size = int(match["size"])
    if match["imm"] is not None:
        return UsdtArg(ARG_CONST, size, 0, int(match["imm"]))
    reg = match["reg"] or match["base"]
    canonical = _REG_ALIASES.get(reg, reg)
    if canonical not in _PT_REGS:
        raise ValueError(f"unsupported register {reg!r} in USDT argument {text!r}")
    reg_offset = _PT_REGS.index(canonical) * 8
    if match["reg"] is not None:
        return UsdtArg(ARG_REG, size, reg_offset, 0)
    return UsdtArg(ARG_REG_DEREF, size, reg_offset, int(match["off"] or 0))


def _file_offset(segments: list[tuple[int, int, int]], address: int) -> int | None:
    for vaddr, offset, size in segments:
        if vaddr <= address < vaddr + size:
            return address - vaddr + offset
    return None


@lru_cache(maxsize=32)
def _read_notes(path: str, _mtime_ns: int) -> tuple[tuple[UsdtProbe, ...], tuple[int, int] | None]:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import NoteSection

    try:
        with open(path, "rb") as handle:
            elf = ELFFile(handle)
            notes = elf.get_section_by_name(".note.stapsdt")
            base_section = elf.get_section_by_name(".stapsdt.base")
            segments = [
                (int(s["p_vaddr"]), int(s["p_offset"]), int(s["p_filesz"]))
                for s in elf.iter_segments()
                if s["p_type"] == "PT_LOAD"
            ]
            probes: list[UsdtProbe] = []
            if isinstance(notes, NoteSection):
                actual_base = int(base_section["sh_addr"]) if base_section is not None else 0
                for note in notes.iter_notes():
                    if note["n_name"] != "stapsdt":
                        continue
                    probes.append(_probe(bytes(note["n_desc"]), actual_base, segments))
            return tuple(probes), _python_version(elf)
    except (OSError, ELFError) as exc:
        raise CollectorEnvironmentError(f"cannot read ELF notes ({exc})", path=path) from exc


def _probe(desc: bytes, actual_base: int, segments: list[tuple[int, int, int]]) -> UsdtProbe:
    pc, base, semaphore = struct.unpack_from("<QQQ", desc, 0)
    provider, name, spec = [*desc[24:].split(b"\0"), b"", b""][:3]
    if actual_base and base:  # prelinked: shift by the difference, as systemtap does
        pc += actual_base - base
        if semaphore:
            semaphore += actual_base - base
    offset = _file_offset(segments, pc)
    semaphore_offset = _file_offset(segments, semaphore) if semaphore else 0
    args: list[UsdtArg] = []
    for part in spec.decode().split():
        try:
            args.append(parse_arg(part))
        except ValueError:
            args = []
            break
    return UsdtProbe(
        provider.decode(),
        name.decode(),
        offset if offset is not None else -1,
        semaphore_offset or 0,
        semaphore,
        tuple(args),
        spec.decode(),
    )


def _python_version(elf: Any) -> tuple[int, int] | None:
    """CPython's version from its exported Py_Version constant (3.11+), when present."""
    from elftools.elf.sections import SymbolTableSection

    for name in (".dynsym", ".symtab"):
        table = elf.get_section_by_name(name)
        if not isinstance(table, SymbolTableSection):
            continue
        found = table.get_symbol_by_name("Py_Version")
        if not found:
            continue
        section = elf.get_section(found[0]["st_shndx"])
        start = int(found[0]["st_value"]) - int(section["sh_addr"])
        hexversion = struct.unpack_from("<I", section.data(), start)[0]
        return hexversion >> 24, (hexversion >> 16) & 0xFF
    return None


def read_probes(path: str) -> tuple[tuple[UsdtProbe, ...], tuple[int, int] | None]:
    """All USDT probes of a binary, and its CPython version when it is a CPython."""
    try:
        stat = Path(path).stat()
    except OSError as exc:
        raise SymbolNotFoundError("binary not found on this host", path=path) from exc
    return _read_notes(str(Path(path).resolve()), stat.st_mtime_ns)


def find_probe(path: str, label: str) -> UsdtProbe:
    """The probe `provider:name` of a binary; a one-line reason when there is none."""
    probes, _ = read_probes(path)
    if not probes:
        raise CollectorEnvironmentError(
            f"USDT {label}: the binary has no .note.stapsdt (no USDT probes)", path=path
        )
    provider, _, name = label.partition(":")
    for probe in probes:
        if probe.provider == provider and probe.name == name:
            if probe.offset < 0:
                raise CollectorEnvironmentError(
                    f"USDT {label}: its address is outside every loadable segment", path=path
                )
            return probe
    names = ", ".join(sorted({p.label for p in probes})[:8])
    raise CollectorEnvironmentError(
        f"USDT {label} is not among the binary's probes ({names}…)", path=path
    )


# --- python:audit ---------------------------------------------------------------------------

AUDIT_NAME_LEN: Final = 64
# Audit events whose arguments are offered, with the record kind and the argument positions
# kept (by name). Anything else is recorded by name only: an environment, argv, code objects
# or buffers never leave the process.
AUDIT_EVENTS: Final[dict[str, tuple[int, dict[int, str]]]] = {
    "socket.connect": (KIND_NET, {1: "address"}),
    "socket.bind": (KIND_NET, {1: "address"}),
    "socket.getaddrinfo": (KIND_NET, {0: "host", 1: "port"}),
    "socket.gethostbyname": (KIND_NET, {0: "host"}),
    "open": (KIND_FILE, {0: "path", 1: "mode", 2: "flags"}),
    "os.remove": (KIND_FILE, {0: "path"}),
    "os.rename": (KIND_FILE, {0: "src", 1: "dst"}),
    "subprocess.Popen": (KIND_EXEC, {0: "executable"}),
    "os.exec": (KIND_EXEC, {0: "path"}),
    "os.posix_spawn": (KIND_EXEC, {0: "path"}),
    "import": (KIND_FUNCTION, {0: "module"}),
}


def audit_kind(event: str) -> int:
    return AUDIT_EVENTS.get(event, (KIND_FUNCTION, {}))[0]


def str_data_offset(version: tuple[int, int] | None) -> int:
    """Where a compact ASCII str's characters start (PyASCIIObject lost `wstr` in 3.12)."""
    return 40 if version is not None and version >= (3, 12) else 48


@dataclass(frozen=True)
class PyObjectSnapshot:
    """What the audit program copied of one Python object (see probes/usdt.bpf.c)."""

    type_name: str
    head: bytes  # 24 bytes from offset 16: ob_size / length, hash or items, state
    text: bytes


def _py_value(obj: PyObjectSnapshot, version: tuple[int, int] | None) -> Any:
    if obj.type_name == "str":
        length, _hash, state = struct.unpack_from("<qqI", obj.head, 0)
        ascii_compact = (state >> 5) & 1 and (state >> 6) & 1
        if not ascii_compact or length > len(obj.text):
            return None  # non-ASCII or longer than copied: left out, not guessed
        return obj.text[:length].decode("ascii", "replace")
    if obj.type_name == "int":
        if version is not None and version >= (3, 12):
            tag, digit = struct.unpack_from("<QI", obj.head, 0)
            ndigits, sign = tag >> 3, 1 - (tag & 3)
        else:
            size, digit = struct.unpack_from("<qI", obj.head, 0)
            ndigits, sign = abs(size), (1 if size >= 0 else -1)
        if ndigits > 1:
            return None
        return sign * digit if ndigits else 0
    return None


def audit_details(
    event: str,
    count: int,
    objects: list[PyObjectSnapshot],
    version: tuple[int, int] | None,
) -> dict[str, Any]:
    """The safe arguments of an audit event: objects[0..2] are the argument tuple's first
    items, objects[3..4] the first two items of argument 1 when it is a tuple (an address)."""
    out: dict[str, Any] = {"event": event}
    _kind, wanted = AUDIT_EVENTS.get(event, (KIND_FUNCTION, {}))
    for position, name in wanted.items():
        if position >= min(count, 3):
            continue
        obj = objects[position]
        if name == "address" and obj.type_name == "tuple":
            host, port = (_py_value(o, version) for o in objects[3:5])
            if isinstance(host, str):
                out["address"] = host
            if isinstance(port, int):
                out["port"] = port
            continue
        value = _py_value(obj, version)
        if isinstance(value, str | int):
            out[name] = value
    return out
