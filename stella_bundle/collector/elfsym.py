"""ELF symbol → file offset for uprobes, over the shared index in functionmap/elf.py.

PIE, shared objects and version suffixes are handled by the index; this module turns a miss
into the collector's "not observable" diagnosis.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

from ..errors import CollectorEnvironmentError, MalformedDocumentError
from ..formats.node_hash import normalize_symbol
from ..functionmap.elf import ElfIndex
from ..functionmap.elf import index_binary as _index_binary


class SymbolNotFoundError(CollectorEnvironmentError):
    """The binary or the symbol is not on this host: ENOENT, recorded as a probe failure."""

    errno_number = errno.ENOENT


@dataclass(frozen=True)
class ResolvedSymbol:
    binary_path: str
    symbol: str  # the ELF name as found (may carry a version suffix)
    offset: int
    build_id: str | None
    ifunc: bool


def index_binary(path: str) -> ElfIndex:
    """The shared ELF index; an unreadable binary is a problem of this host."""
    try:
        return _index_binary(path)
    except MalformedDocumentError as exc:
        if "not found" in exc.message:
            raise SymbolNotFoundError("binary not found on this host", path=path) from exc
        raise CollectorEnvironmentError(exc.message, path=path) from exc


def resolve_symbol(binary_path: str, symbol: str, *, follow_links: bool = True) -> ResolvedSymbol:
    """File offset of `symbol` in `binary_path`; a clear "not observable" when it cannot be.

    `follow_links=False` for paths under /proc/PID/root: resolving them would leave the
    container's root (the magic link reads as "/") and index the host's file instead."""
    index = index_binary(str(Path(binary_path).resolve()) if follow_links else binary_path)
    wanted = normalize_symbol(symbol)
    found = index.functions.get(wanted)
    if found is None:
        if not index.has_symtab:
            raise SymbolNotFoundError(
                f"symbol {symbol!r} is not observable: the binary is stripped (no .symtab) and "
                "does not export it in .dynsym; deploy an unstripped build or keep its symbols",
                path=binary_path,
            )
        raise SymbolNotFoundError(
            f"symbol {symbol!r} is not defined in this binary (not observable here)",
            path=binary_path,
        )
    name, offset, ifunc = found
    return ResolvedSymbol(str(Path(binary_path)), name, offset, index.build_id, ifunc)
