"""ELF symbol tables and build ids (pyelftools): which functions a binary can be probed at.

One index serves both sides: `function-map generate` asks whether a binary defines a symbol,
the collector asks for its file offset. A uprobe is placed at a file offset, not a virtual
address: st_value minus the vaddr of the PT_LOAD segment holding it plus that segment's file
offset. A symbol outside every loaded segment cannot be probed, so it does not count as defined.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection, SymbolTableSection

from ..errors import MalformedDocumentError
from .symbols import normalize_symbol

_FUNCTION_TYPES = ("STT_FUNC", "STT_GNU_IFUNC")


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


def _build_id_of(elf: ELFFile) -> str | None:
    for section in elf.iter_sections():
        if not isinstance(section, NoteSection):
            continue
        for note in section.iter_notes():
            if note["n_type"] == "NT_GNU_BUILD_ID":
                return str(note["n_desc"])
    return None


def read_build_id(path: str) -> str | None:
    """The GNU build id alone (the notes, not the symbol tables: cheap on a large library);
    None when the file has none or is no readable ELF file."""
    try:
        with open(path, "rb") as handle:
            return _build_id_of(ELFFile(handle))
    except (ELFError, OSError):
        return None


@functools.lru_cache(maxsize=64)
def index_binary(path: str) -> ElfIndex:
    """Defined functions of one ELF file with their file offsets, and its GNU build id."""
    functions: dict[str, tuple[str, int, bool]] = {}
    build_id: str | None = None
    has_symtab = False
    try:
        with open(path, "rb") as handle:
            elf = ELFFile(handle)
            segments = _segments(elf)
            for section_name in (".dynsym", ".symtab"):
                section = elf.get_section_by_name(section_name)
                if not isinstance(section, SymbolTableSection):
                    continue
                if section_name == ".symtab":
                    has_symtab = True
                for sym in section.iter_symbols():
                    kind = sym["st_info"]["type"]
                    if (
                        not sym.name
                        or kind not in _FUNCTION_TYPES
                        or sym["st_shndx"] == "SHN_UNDEF"
                        or not sym["st_value"]
                    ):
                        continue
                    offset = _file_offset(segments, sym["st_value"])
                    if offset is None:
                        continue
                    functions[normalize_symbol(sym.name)] = (
                        sym.name,
                        offset,
                        kind == "STT_GNU_IFUNC",
                    )
            build_id = _build_id_of(elf)
    except FileNotFoundError as exc:
        raise MalformedDocumentError("binary not found", path=path) from exc
    except (ELFError, OSError) as exc:
        raise MalformedDocumentError(f"not a readable ELF file: {exc}", path=path) from exc
    return ElfIndex(str(Path(path)), build_id, has_symtab, functions)
