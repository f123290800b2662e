"""ELF symbol tables and build ids (pyelftools): what a binary can actually be probed at."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import MalformedDocumentError
from .symbols import normalize_symbol

_FUNCTION_TYPES = ("STT_FUNC", "STT_GNU_IFUNC")


@dataclass(frozen=True)
class ElfSymbols:
    path: str
    build_id: str | None
    functions: frozenset[str]  # normalised names of defined functions

    def defines(self, symbol: str) -> bool:
        return normalize_symbol(symbol) in self.functions


@functools.lru_cache(maxsize=32)
def read_elf_symbols(path: str) -> ElfSymbols:
    """Defined function symbols from .dynsym and .symtab, normalised, plus the GNU build id."""
    functions: set[str] = set()
    build_id: str | None = None
    try:
        with open(path, "rb") as handle:
            elf = ELFFile(handle)
            for name in (".dynsym", ".symtab"):
                section = elf.get_section_by_name(name)
                if section is None or not hasattr(section, "iter_symbols"):
                    continue
                for symbol in section.iter_symbols():
                    if (
                        symbol.name
                        and symbol["st_shndx"] != "SHN_UNDEF"
                        and symbol["st_info"]["type"] in _FUNCTION_TYPES
                    ):
                        functions.add(normalize_symbol(symbol.name))
            for section in elf.iter_sections():
                if section["sh_type"] != "SHT_NOTE":
                    continue
                for note in section.iter_notes():  # type: ignore[attr-defined]
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        build_id = str(note["n_desc"])
    except FileNotFoundError as exc:
        raise MalformedDocumentError("binary not found", path=path) from exc
    except (ELFError, OSError) as exc:
        raise MalformedDocumentError(f"not a readable ELF file: {exc}", path=path) from exc
    return ElfSymbols(str(Path(path)), build_id, frozenset(functions))
