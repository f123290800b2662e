"""BTF and .BTF.ext reading for the probe lock and its build-time checks (pure Python).

The lock records, per program, the CO-RE relocations libbpf will apply at load (each one the
kernel type and field path it reads, e.g. `field_byte_offset sock.__sk_common.skc_daddr`) and,
for BTF-attached programs (fentry, fexit, tp_btf), the kernel function or tracepoint they attach
to. A test resolves all of them against the running kernel's /sys/kernel/btf/vmlinux: the fentry
objects are checked where their programs cannot be executed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

BTF_MAGIC: Final = 0xEB9F
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 7, 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19
_MODIFIERS: Final = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)
KIND_NAMES: Final = {KIND_STRUCT: "struct", KIND_UNION: "union", KIND_FUNC: "func"}
# enum bpf_core_relo_kind
RELO_KINDS: Final = (
    "field_byte_offset",
    "field_byte_size",
    "field_exists",
    "field_signed",
    "field_lshift_u64",
    "field_rshift_u64",
    "type_id_local",
    "type_id_target",
    "type_exists",
    "type_size",
    "enumval_exists",
    "enumval_value",
    "type_matches",
)


@dataclass
class BtfType:
    kind: int
    name: str
    ref: int  # size_or_type: the referenced type for pointers, modifiers, funcs
    members: list[tuple[str, int]] = field(default_factory=list)  # struct/union (name, type)
    elem: int = 0  # array element type


@dataclass
class Btf:
    types: list[BtfType]  # index = type id (0 = void)
    strings: bytes

    def string(self, offset: int) -> str:
        end = self.strings.index(b"\0", offset)
        return self.strings[offset:end].decode()

    def resolve(self, type_id: int) -> BtfType:
        """The type behind typedefs and qualifiers."""
        btf_type = self.types[type_id]
        while btf_type.kind in _MODIFIERS:
            btf_type = self.types[btf_type.ref]
        return btf_type

    def by_name(self, kind: int) -> dict[str, BtfType]:
        return {t.name: t for t in self.types if t.kind == kind and t.name}


def parse_btf(data: bytes) -> Btf:
    magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
        "<HBBIIIII", data, 0
    )
    if magic != BTF_MAGIC:
        raise ValueError("not BTF data (bad magic)")
    strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
    types: list[BtfType] = [BtfType(0, "void", 0)]
    pos, end = hdr_len + type_off, hdr_len + type_off + type_len
    while pos < end:
        name_off, info, ref = struct.unpack_from("<III", data, pos)
        pos += 12
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        name_end = strings.index(b"\0", name_off)
        item = BtfType(kind, strings[name_off:name_end].decode(), ref)
        if kind in (KIND_STRUCT, KIND_UNION):
            for _ in range(vlen):
                m_name, m_type, _m_off = struct.unpack_from("<III", data, pos)
                pos += 12
                m_end = strings.index(b"\0", m_name)
                item.members.append((strings[m_name:m_end].decode(), m_type))
        elif kind == KIND_ARRAY:
            item.elem = struct.unpack_from("<I", data, pos)[0]
            pos += 12
        elif kind in (KIND_INT, KIND_VAR, KIND_DECL_TAG):
            pos += 4
        elif kind in (KIND_ENUM, KIND_FUNC_PROTO):
            pos += 8 * vlen
        elif kind in (KIND_DATASEC, KIND_ENUM64):
            pos += 12 * vlen
        types.append(item)
    return Btf(types, strings)


@dataclass(frozen=True)
class CoreRelocation:
    section: str
    kind: str
    root: str  # "struct sock"
    path: tuple[str, ...]  # member names from the root ("__sk_common", "skc_daddr")

    def describe(self) -> str:
        text = self.root
        for part in self.path:
            text += part if part.startswith("[") else "." + part
        return f"{self.kind} {text}"


def _access_path(btf: Btf, type_id: int, access: str) -> tuple[str, tuple[str, ...]]:
    root = btf.resolve(type_id)
    root_name = f"{KIND_NAMES.get(root.kind, 'type')} {root.name}"
    indices = [int(i) for i in access.split(":") if i != ""]
    path: list[str] = []
    current = root
    for index in indices[1:]:  # the first index is an array index on the root pointer
        if current.kind in (KIND_STRUCT, KIND_UNION):
            name, member_type = current.members[index]
            path.append(name or f"<anon{index}>")
            current = btf.resolve(member_type)
        elif current.kind == KIND_ARRAY:
            path.append(f"[{index}]")
            current = btf.resolve(current.elem)
        else:
            break
    return root_name, tuple(path)


def core_relocations(btf_data: bytes, ext_data: bytes) -> list[CoreRelocation]:
    """Every CO-RE relocation of an object's .BTF.ext, named through its .BTF."""
    btf = parse_btf(btf_data)
    _magic, _v, _f, hdr_len = struct.unpack_from("<HBBI", ext_data, 0)
    if hdr_len < 32:
        return []
    core_off, core_len = struct.unpack_from("<II", ext_data, 24)
    if not core_len:
        return []
    pos = hdr_len + core_off
    end = pos + core_len
    record_size = struct.unpack_from("<I", ext_data, pos)[0]
    pos += 4
    out: list[CoreRelocation] = []
    while pos < end:
        sec_name_off, count = struct.unpack_from("<II", ext_data, pos)
        pos += 8
        section = btf.string(sec_name_off)
        for _ in range(count):
            _insn, type_id, access_off, kind = struct.unpack_from("<IIII", ext_data, pos)
            pos += record_size
            root, path = _access_path(btf, type_id, btf.string(access_off))
            kind_name = RELO_KINDS[kind] if kind < len(RELO_KINDS) else str(kind)
            out.append(CoreRelocation(section, kind_name, root, path))
    return out


def btf_target(section: str) -> str | None:
    """What a BTF-attached program attaches to: 'func tcp_connect', 'tracepoint sys_enter'."""
    kind, _, target = section.partition("/")
    if kind in ("fentry", "fexit") and target:
        return f"func {target}"
    if kind == "tp_btf" and target:
        return f"tracepoint {target}"
    return None


def unresolved(kernel: Btf, relocations: list[CoreRelocation], targets: list[str]) -> list[str]:
    """Relocations and attach targets the kernel's BTF does not have (empty: all resolve)."""
    structs = {**kernel.by_name(KIND_UNION), **kernel.by_name(KIND_STRUCT)}
    funcs = kernel.by_name(KIND_FUNC)
    typedefs = kernel.by_name(KIND_TYPEDEF)
    problems: list[str] = []
    for target in targets:
        kind, name = target.split(" ", 1)
        if kind == "func" and name not in funcs:
            problems.append(f"{target}: not in the kernel's BTF")
        if kind == "tracepoint" and f"btf_trace_{name}" not in typedefs:
            problems.append(f"{target}: not in the kernel's BTF")
    for relocation in relocations:
        name = relocation.root.split(" ", 1)[1]
        current = structs.get(name)
        if current is None:
            problems.append(f"{relocation.describe()}: no {relocation.root} in the kernel")
            continue
        for member in relocation.path:
            found = _find_member(kernel, current, member)
            if found is None:
                problems.append(f"{relocation.describe()}: no member {member}")
                break
            current = found
    return problems


def _find_member(btf: Btf, container: BtfType, name: str) -> BtfType | None:
    """A member by name, looking through anonymous structs and unions as libbpf does."""
    if name.startswith("["):
        return btf.resolve(container.elem) if container.kind == KIND_ARRAY else None
    for member_name, member_type in container.members:
        resolved = btf.resolve(member_type)
        if member_name == name:
            return resolved
        if not member_name and resolved.kind in (KIND_STRUCT, KIND_UNION):
            inner = _find_member(btf, resolved, name)
            if inner is not None:
                return inner
    return None


def kernel_btf(path: Path = Path("/sys/kernel/btf/vmlinux")) -> Btf:
    return parse_btf(path.read_bytes())
