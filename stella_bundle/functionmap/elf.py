"""ELF symbol tables and build ids (pyelftools): which functions a binary can be probed at.

One index serves both sides: `function-map generate` asks whether a binary defines a symbol,
the collector asks for its file offset. A uprobe is placed at a file offset, not a virtual
address: st_value minus the vaddr of the PT_LOAD segment holding it plus that segment's file
offset. A symbol outside every loaded segment cannot be probed, so it does not count as defined.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Final, Generic, TypeVar

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection
from elftools.elf.segments import NoteSegment

from ..errors import MalformedDocumentError
from ..formats.node_hash import normalize_symbol

# st_info's low nibble; section index 0 is SHN_UNDEF. STT_GNU_IFUNC (10) entries are kept out,
# as they always were (pyelftools names type 10 STT_LOOS, which the former filter did not list):
# their address is the resolver, run once at load, so a probe there never sees a call.
_STT_FUNC: Final = 2
_STT_GNU_IFUNC: Final = 10
_FUNCTION_TYPES: Final = (_STT_FUNC,)
_SHN_UNDEF: Final = 0
_K = TypeVar("_K", bound=Hashable)


@dataclass(frozen=True)
class ElfIndex:
    path: str
    build_id: str | None
    has_symtab: bool
    # normalised name → (ELF name, file offset, is ifunc); .symtab wins over .dynsym.
    functions: dict[str, tuple[str, int, bool]]

    def defines(self, symbol: str) -> bool:
        return normalize_symbol(symbol) in self.functions


def _segments(elf: ELFFile) -> list[tuple[int, int, int]]:
    return [
        (seg["p_vaddr"], seg["p_memsz"], seg["p_offset"])
        for seg in elf.iter_segments()
        if seg["p_type"] == "PT_LOAD"
    ]


def _file_offset(segments: list[tuple[int, int, int]], vaddr: int) -> int | None:
    for start, size, offset in segments:
        if start <= vaddr < start + size:
            return vaddr - start + offset
    return None


# Elf64_Sym and Elf32_Sym order their fields differently; section headers: (name, type,
# flags, addr, offset, size, link, ...).
_SYM64: Final = struct.Struct("IBBHQQ")  # name, info, other, shndx, value, size
_SYM32: Final = struct.Struct("IIIBBH")  # name, value, size, info, other, shndx
_SHDR64: Final = struct.Struct("IIQQQQIIQQ")
_SHDR32: Final = struct.Struct("IIIIIIIIII")
_SHT_SYMTAB: Final = 2
_SHT_DYNSYM: Final = 11


def _read_at(handle: BinaryIO, offset: int, size: int) -> bytes:
    handle.seek(offset)
    return handle.read(size)


def _symbol_tables(elf: ELFFile, handle: BinaryIO) -> list[tuple[int, bytes, bytes]]:
    """(type, table, string table) of every SHT_DYNSYM, then every SHT_SYMTAB section, from
    the raw section headers: pyelftools builds every section object on the way to one by
    name, a GNU hash table parse alone ~0.1 s for libcrypto (a container start waits)."""
    order = "<" if elf.little_endian else ">"
    layout = _SHDR64 if elf.elfclass == 64 else _SHDR32
    at, size, count = elf.header["e_shoff"], elf.header["e_shentsize"], elf.header["e_shnum"]
    if not at or size < layout.size:
        return []
    if not count:  # 0xff00 sections or more: the count is section 0's sh_size
        count = struct.unpack(order + layout.format, _read_at(handle, at, layout.size))[5]
    raw = _read_at(handle, at, count * size)
    headers = [
        struct.unpack_from(order + layout.format, raw, n * size)
        for n in range(min(count, len(raw) // size))
    ]
    tables: list[tuple[int, bytes, bytes]] = []
    for wanted in (_SHT_DYNSYM, _SHT_SYMTAB):
        for header in headers:
            kind, offset, length, link = header[1], header[4], header[5], header[6]
            if kind != wanted or link >= len(headers):
                continue
            strings = headers[link]
            tables.append(
                (
                    kind,
                    _read_at(handle, offset, length),
                    _read_at(handle, strings[4], strings[5]),
                )
            )
    return tables


def _symbols(elf: ELFFile, data: bytes, strtab: bytes) -> Iterator[tuple[str, int, int]]:
    """(name, type, value) of every named, defined entry with an address, unpacked in bulk
    from the raw table: pyelftools' per-symbol parse costs ~0.4 s for libcrypto, this ~20 ms."""
    order = "<" if elf.little_endian else ">"
    layout = _SYM64 if elf.elfclass == 64 else _SYM32
    usable = data[: len(data) // layout.size * layout.size]
    for row in struct.iter_unpack(order + layout.format, usable):
        if layout is _SYM64:
            name_at, info, _other, shndx, value, _size = row
        else:
            name_at, value, _size, info, _other, shndx = row
        if not name_at or not value or shndx == _SHN_UNDEF:
            continue
        end = strtab.find(b"\0", name_at)
        # As pyelftools decodes names (Go's carry UTF-8, "·"); a bad byte is replaced.
        name = strtab[name_at : end if end >= 0 else None].decode("utf-8", errors="replace")
        yield name, info & 0xF, value


def _build_id(elf: ELFFile) -> str | None:
    """The GNU build id from the PT_NOTE segments (no section object built), else from the
    note sections (Go's linker leaves the GNU note out of its PT_NOTE segment)."""
    for segment in elf.iter_segments():
        if isinstance(segment, NoteSegment):
            for note in segment.iter_notes():
                if _is_build_id(note):
                    return str(note["n_desc"])
    for section in elf.iter_sections():
        if isinstance(section, NoteSection):
            for note in section.iter_notes():
                if _is_build_id(note):
                    return str(note["n_desc"])
    return None


def _is_build_id(note: Any) -> bool:
    # Owner "GNU" too: pyelftools reads every type-3 note as a build id, SystemTap's
    # (owner "stapsdt", the USDT probes of python3) included.
    return bool(note["n_type"] == "NT_GNU_BUILD_ID" and note["n_name"] == "GNU")


def _read_index(path: str) -> ElfIndex:
    functions: dict[str, tuple[str, int, bool]] = {}
    has_symtab = False
    with open(path, "rb") as handle:
        elf = ELFFile(handle)
        segments = _segments(elf)
        for kind, table, strings in _symbol_tables(elf, handle):
            has_symtab = has_symtab or kind == _SHT_SYMTAB
            for name, symbol_type, value in _symbols(elf, table, strings):
                if symbol_type not in _FUNCTION_TYPES:
                    continue
                offset = _file_offset(segments, value)
                if offset is not None:
                    functions[normalize_symbol(name)] = (
                        name,
                        offset,
                        symbol_type == _STT_GNU_IFUNC,
                    )
        build_id = _build_id(elf)
    return ElfIndex(str(Path(path)), build_id, has_symtab, functions)


def read_build_id(path: str) -> str | None:
    """The GNU build id alone (the notes, not the symbol tables: cheap on a large library);
    None when the file has none or is no readable ELF file."""
    try:
        return _quick_build_id(path)
    except (ELFError, OSError, struct.error):
        return None


def _quick_build_id(path: str) -> str | None:
    """The GNU build id alone (no symbol table read): ~1 ms."""
    with open(path, "rb") as handle:
        return _build_id(ELFFile(handle))


class _Lru(Generic[_K]):
    """A small bounded map (least recently used out): an agent follows containers for days."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[_K, ElfIndex] = OrderedDict()

    def get(self, key: _K) -> ElfIndex | None:
        found = self.items.get(key)
        if found is not None:
            self.items.move_to_end(key)
        return found

    def put(self, key: _K, index: ElfIndex) -> None:
        self.items[key] = index
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)


# One index per file (device, inode, mtime, size: a replaced binary is read again) and per
# build id and size: every container of an image has its own copy of a library (another
# device under overlayfs) with the same build id, indexed once. The size tells a stripped copy
# (same build id, no .symtab) from the unstripped one.
_BY_FILE: Final = _Lru[tuple[int, int, int, int]](256)
_BY_BUILD: Final = _Lru[tuple[str, int]](64)
_LOCK: Final = threading.Lock()


def index_binary(path: str) -> ElfIndex:
    """Defined functions of one ELF file with their file offsets, and its GNU build id."""
    try:
        info = os.stat(path)
        file_key = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)
        with _LOCK:
            found = _BY_FILE.get(file_key)
        if found is None:
            build_id = _quick_build_id(path)
            with _LOCK:
                found = _BY_BUILD.get((build_id, info.st_size)) if build_id else None
            if found is None:
                found = _read_index(path)
            with _LOCK:
                _BY_FILE.put(file_key, found)
                if found.build_id is not None:
                    _BY_BUILD.put((found.build_id, info.st_size), found)
    except FileNotFoundError as exc:
        raise MalformedDocumentError("binary not found", path=path) from exc
    except (ELFError, OSError, struct.error) as exc:
        raise MalformedDocumentError(f"not a readable ELF file: {exc}", path=path) from exc
    # A shared index names the file it was asked about.
    return found if found.path == str(Path(path)) else replace(found, path=str(Path(path)))
