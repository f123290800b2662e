"""Symbol normalisation and node hashes (DESIGN.md §4 "node_hash").

`node_hash = "sha256:" + hex(sha256(utf8(canonical_purl + "#" + normalized_symbol)))`. The
collector computes the same hash for what it observes, so both sides import this module.
"""

from __future__ import annotations

import functools
import hashlib
import re

from packageurl import PackageURL

from ..errors import InputError

KERNEL_PURL = "pkg:generic/linux-kernel"

_ELF_VERSION_RE = re.compile(r"@{1,2}[^@]*$")
_RUST_HASH_RE = re.compile(r"::h[0-9a-f]{16}$")
_RUST_V0_PREFIX = "_R"
_ITANIUM_PREFIXES = ("_Z", "__Z")
_ANONYMOUS = "(anonymous namespace)"
_ANONYMOUS_TOKEN = "\x00anonymous\x00"


@functools.lru_cache(maxsize=65536)
def canonical_purl(purl: str) -> str:
    """Parse and re-serialise a purl with packageurl-python (normalises case, order, quoting)."""
    try:
        return str(PackageURL.from_string(purl).to_string())
    except ValueError as exc:
        raise InputError(f"not a valid package URL: {purl!r} ({exc})", field="purl") from exc


def _drop_signature(demangled: str) -> str:
    """`int ns::f<int>(int, char) const` → `ns::f<int>` (parameter list and return type)."""
    # A placeholder keeps the space and parentheses of this name part out of the parsing.
    text = demangled.replace(_ANONYMOUS, _ANONYMOUS_TOKEN)
    # Find the top-level parameter list: the first '(' not inside template brackets, skipping
    # "operator()" whose own parentheses are part of the name.
    depth = 0
    index = 0
    cut = None
    while index < len(text):
        ch = text[index]
        if text.startswith("operator", index):
            index += len("operator")
            # operator(), operator<, operator<<, operator<=>, operator-> ...: take it whole.
            match = re.match(
                r"\s*(\(\)|<=>|<<=|>>=|<<|>>|->\*?|\[\]|[<>!=+\-*/%^&|~,]=?)", text[index:]
            )
            if match:
                index += match.end()
            continue
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "(" and depth == 0:
            cut = index
            break
        index += 1
    name = text[:cut] if cut is not None else text
    # A return type precedes the name, separated by a space at template depth 0.
    depth = 0
    split_at = -1
    for position, ch in enumerate(name):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == " " and depth == 0 and not name[:position].endswith("operator"):
            split_at = position
    if split_at >= 0:
        name = name[split_at + 1 :]
    return name.strip().replace(_ANONYMOUS_TOKEN, _ANONYMOUS)


def normalize_symbol(symbol: str) -> str:
    """ELF version suffix removed; C++ and Rust names demangled without signature."""
    name = symbol.strip()
    if "@" not in name and not name.startswith(_MANGLED_PREFIXES):
        return name  # most symbols: nothing to do, and no cache (its miss cost more than this)
    return _normalize_marked(name)


_MANGLED_PREFIXES = (_RUST_V0_PREFIX, *_ITANIUM_PREFIXES)


@functools.lru_cache(maxsize=65536)
def _normalize_marked(name: str) -> str:
    """`normalize_symbol` of a stripped name with a version suffix or a mangling prefix."""
    name = _ELF_VERSION_RE.sub("", name) if "@" in name else name
    if name.startswith(_RUST_V0_PREFIX):
        import rust_demangler  # the demanglers load only for mangled names (~25 ms)

        try:
            return _drop_signature(str(rust_demangler.demangle(name)))
        except Exception:
            return name
    if name.startswith(_ITANIUM_PREFIXES):
        demangled = _demangle_itanium(name)
        if demangled is None:
            return name
        # Legacy Rust mangling is Itanium-shaped with a trailing hash segment.
        demangled = _RUST_HASH_RE.sub("", demangled)
        return _drop_signature(demangled)
    return name


def _demangle_itanium(name: str) -> str | None:
    import cxxfilt  # finds and loads libstdc++ through ctypes: only for a mangled name
    import rust_demangler

    try:
        demangled = str(cxxfilt.demangle(name))
    except Exception:
        return None
    if demangled == name:
        return None
    # Legacy Rust symbols use escapes ($LT$, ..) that c++filt leaves alone.
    if "$" in demangled or _RUST_HASH_RE.search(demangled):
        try:
            rust = str(rust_demangler.demangle(name))
            return rust
        except Exception:
            return demangled
    return demangled


def node_hash(purl: str, symbol: str) -> str:
    """The identity of one function of one component."""
    key = canonical_purl(purl) + "#" + normalize_symbol(symbol)
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
