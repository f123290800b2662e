"""From function-map nodes to attach specs: which object, program, attach point and cookie.

Kernel nodes (purl pkg:generic/linux-kernel) name an event source (file, exec, net) whose
attach type follows the category's fallback order; libc connect/accept and OpenSSL
SSL_read/SSL_write/SSL_do_handshake use dedicated programs; every other node uses the one
generic uprobe program, attached once per node with its index as the BPF cookie.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from ..errors import CollectorEnvironmentError
from ..formats.node_hash import KERNEL_PURL, canonical_purl, normalize_symbol
from .elfsym import SymbolNotFoundError, index_binary, resolve_symbol
from .events import (
    AUDIT_NAME_LEN,
    KIND_EXEC,
    KIND_FILE,
    KIND_FUNCTION,
    KIND_NET,
    KIND_TLS,
    MAX_NODES,
)
from .features import KernelFeatures
from .usdt import AUDIT_PROBE, UsdtArg, audit_kind, find_probe, read_probes

GENERIC_OBJECT: Final = "uprobe_node.bpf.o"
GENERIC_PROGRAM: Final = "stella_uprobe_node"
GENERIC_RETURN_PROGRAM: Final = "stella_uretprobe_node"
USDT_OBJECT: Final = "usdt.bpf.o"
USDT_PROGRAM: Final = "stella_usdt_node"
AUDIT_PROGRAM: Final = "stella_python_audit"
# User-space attach types a node may ask for in probe_types (the first one listed wins).
USER_TYPES: Final = ("uprobe", "uretprobe", "usdt")


class NodeLike(Protocol):
    @property
    def purl(self) -> str: ...
    @property
    def symbol(self) -> str: ...
    @property
    def node_hash(self) -> str: ...
    @property
    def binary_path(self) -> str | None: ...
    @property
    def build_id(self) -> str | None: ...
    @property
    def probe_types(self) -> tuple[str, ...] | None: ...


@dataclass(frozen=True)
class KernelSource:
    category: str
    kind: int
    # attach type → (object, program, target: "category/name" for tracepoints, function for kprobes)
    variants: dict[str, tuple[str, str, str]]


_FILE = KernelSource(
    "file",
    KIND_FILE,
    {
        "fentry": ("file.bpf.o", "stella_fe_openat", "do_sys_openat2"),
        "kprobe": ("file.bpf.o", "stella_kp_openat", "do_sys_openat2"),
        "tp_btf": ("file.bpf.o", "stella_btf_openat", "sys_enter"),
        "raw_tracepoint": ("file.bpf.o", "stella_raw_openat", "sys_enter"),
        "tracepoint": ("file.bpf.o", "stella_tp_openat", "syscalls/sys_enter_openat"),
    },
)
_FILE_OPEN = KernelSource(
    "file",
    KIND_FILE,
    {
        "fentry": ("file.bpf.o", "stella_fe_file_open", "security_file_open"),
        "kprobe": ("file.bpf.o", "stella_kp_file_open", "security_file_open"),
    },
)
_EXEC = KernelSource(
    "exec",
    KIND_EXEC,
    {
        "fentry": ("exec.bpf.o", "stella_fe_exec", "security_bprm_check"),
        "tp_btf": ("exec.bpf.o", "stella_btf_exec", "sched_process_exec"),
        "raw_tracepoint": ("exec.bpf.o", "stella_raw_exec", "sched_process_exec"),
        "tracepoint": ("exec.bpf.o", "stella_tp_exec", "sched/sched_process_exec"),
    },
)
_NET = KernelSource(
    "net",
    KIND_NET,
    {
        "fentry": ("net.bpf.o", "stella_fe_tcp_connect", "tcp_connect"),
        "kprobe": ("net.bpf.o", "stella_kp_tcp_connect", "tcp_connect"),
        "tp_btf": ("net.bpf.o", "stella_btf_connect", "sys_enter"),
        "raw_tracepoint": ("net.bpf.o", "stella_raw_connect", "sys_enter"),
        "tracepoint": ("net.bpf.o", "stella_tp_inet_sock_set_state", "sock/inet_sock_set_state"),
    },
)
# TCP state changes: the named tracepoint itself (its old and new state are the evidence).
_TCP_STATE = KernelSource(
    "net",
    KIND_NET,
    {"tracepoint": ("net.bpf.o", "stella_tp_inet_sock_set_state", "sock/inet_sock_set_state")},
)
_ACCEPT = KernelSource(
    "net",
    KIND_NET,
    {
        "fentry": ("net.bpf.o", "stella_fe_accept", "inet_csk_accept"),
        "kprobe": ("net.bpf.o", "stella_kp_accept", "inet_csk_accept"),
    },
)
# Kernel symbols a function map may name, with the source that observes them.
KERNEL_SOURCES: Final[dict[str, KernelSource]] = {
    "openat": _FILE,
    "sys_openat": _FILE,
    "do_sys_openat2": _FILE,
    "security_file_open": _FILE_OPEN,
    "execve": _EXEC,
    "sys_execve": _EXEC,
    "sched_process_exec": _EXEC,
    "security_bprm_check": _EXEC,
    "inet_sock_set_state": _TCP_STATE,
    "tcp_set_state": _TCP_STATE,
    "tcp_connect": _NET,
    "connect": _NET,
    "sys_connect": _NET,
    "inet_csk_accept": _ACCEPT,
}
# The probe_type recorded for an attach type: a BTF-typed tracepoint (tp_btf) is attached as a
# raw tracepoint and the record format's enum has no separate name for it (DESIGN.md §4).
RECORDED_PROBE_TYPE: Final[dict[str, str]] = {"tp_btf": "raw_tracepoint"}
# User-space symbols with a dedicated program: (object, program, kind, category).
SPECIAL_UPROBES: Final[dict[str, tuple[str, str, int, str]]] = {
    "connect": ("net.bpf.o", "stella_libc_connect", KIND_NET, "libc-net"),
    "accept": ("net.bpf.o", "stella_libc_accept", KIND_NET, "libc-net"),
    "accept4": ("net.bpf.o", "stella_libc_accept", KIND_NET, "libc-net"),
    "SSL_read": ("tls.bpf.o", "stella_ssl_read", KIND_TLS, "tls"),
    "SSL_write": ("tls.bpf.o", "stella_ssl_write", KIND_TLS, "tls"),
    "SSL_do_handshake": ("tls.bpf.o", "stella_ssl_do_handshake", KIND_TLS, "tls"),
}


def category_programs() -> dict[str, set[str]]:
    """The attach types each kernel category has a program for (the doctor's choices)."""
    out: dict[str, set[str]] = {}
    for source in KERNEL_SOURCES.values():
        out.setdefault(source.category, set()).update(source.variants)
    return out


@dataclass(frozen=True)
class AttachSpec:
    index: int  # the BPF cookie
    purl: str
    symbol: str
    node_hash: str
    category: str
    kind: int
    attach_type: str  # the attach type used: uprobe, tracepoint, tp_btf, fentry...
    object_name: str
    program: str
    # binary path (uprobes), "category/name" (tracepoints), tracepoint name (raw tracepoints,
    # tp_btf) or kernel function (fentry, kprobe)
    target: str
    offset: int = 0
    build_id: str | None = None
    # USDT: the semaphore's file offset, the note's argument locations, and for python:audit
    # nodes the audit event the node names and the CPython version (object layouts).
    ref_ctr_offset: int = 0
    usdt_args: tuple[UsdtArg, ...] = ()
    audit_event: str | None = None
    python_version: tuple[int, int] | None = None
    # The build id the function map pins for this node (None: any build): a binary replaced
    # on disk is held to it again when its probes are re-resolved (health.py).
    map_build_id: str | None = None

    @property
    def probe_type(self) -> str:
        """What every record of this node says fired (tp_btf is recorded as raw_tracepoint)."""
        return RECORDED_PROBE_TYPE.get(self.attach_type, self.attach_type)

    @property
    def user_space(self) -> bool:
        """Attached to a binary: its path and build-id go on every record."""
        return self.attach_type in USER_TYPES

    @property
    def in_kernel_mode(self) -> bool:
        """Function and TLS hits apply coverage/count in the kernel; sources (audit events
        included: their arguments matter) send every event."""
        return self.kind in (KIND_FUNCTION, KIND_TLS) and self.audit_event is None


@dataclass(frozen=True)
class Unobservable:
    purl: str
    symbol: str
    node_hash: str
    reason: str
    binary_path: str | None = None
    errno: int | None = None  # ENOENT for a symbol or binary not on this host


@dataclass
class AttachPlan:
    specs: list[AttachSpec]
    unobservable: list[Unobservable]

    def programs_by_object(self) -> dict[str, set[str]]:
        wanted: dict[str, set[str]] = {}
        for spec in self.specs:
            wanted.setdefault(spec.object_name, set()).add(spec.program)
        return wanted


def _purl_name(purl: str) -> tuple[str, str]:
    """(type, name) of a purl without depending on packageurl's object model here."""
    body = purl.split(":", 1)[1].split("@", 1)[0].split("?", 1)[0]
    parts = body.split("/")
    return parts[0], parts[-1]


def find_binary(purl: str, symbol: str) -> str:
    """A binary on this host defining `symbol` for the package named by `purl`."""
    ptype, name = _purl_name(canonical_purl(purl))
    candidates: list[str] = []
    if ptype == "deb" and shutil.which("dpkg"):
        listing = subprocess.run(
            ["dpkg", "-L", name], capture_output=True, text=True, check=False
        ).stdout
        candidates += [
            line
            for line in listing.splitlines()
            if ".so" in Path(line).name or "/bin/" in line or "/sbin/" in line
        ]
    if shutil.which("ldconfig"):
        listing = subprocess.run(
            ["ldconfig", "-p"], capture_output=True, text=True, check=False
        ).stdout
        for line in listing.splitlines():
            if "=>" in line and line.strip().startswith(f"lib{name}"):
                candidates.append(line.split("=>", 1)[1].strip())
    wanted = normalize_symbol(symbol)
    for candidate in candidates:
        path = Path(candidate)
        if not path.is_file() or (path.is_symlink() and not path.resolve().is_file()):
            continue
        try:
            if wanted in index_binary(str(path.resolve())).functions:
                return str(path)
        except CollectorEnvironmentError:
            continue
    raise SymbolNotFoundError(
        f"node {purl}#{symbol}: no binary_path in the function map and no binary of this "
        "package defining the symbol was found on this host"
    )


def build_plan(nodes: list[NodeLike], features: KernelFeatures) -> AttachPlan:
    """One spec per node that can be observed here; the rest with the reason."""
    specs: list[AttachSpec] = []
    unobservable: list[Unobservable] = []
    seen: set[str] = set()
    for node in nodes:
        if node.node_hash in seen:
            continue
        seen.add(node.node_hash)
        if len(specs) >= MAX_NODES:
            unobservable.append(
                Unobservable(node.purl, node.symbol, node.node_hash, f"more than {MAX_NODES} nodes")
            )
            continue
        index = len(specs)
        symbol = normalize_symbol(node.symbol)
        try:
            if canonical_purl(node.purl) == KERNEL_PURL:
                specs.append(_kernel_spec(index, node, symbol, features))
            else:
                specs.append(_uprobe_spec(index, node, symbol, features))
        except CollectorEnvironmentError as exc:
            number = exc.errno_number if isinstance(exc, SymbolNotFoundError) else None
            unobservable.append(
                Unobservable(
                    node.purl, node.symbol, node.node_hash, exc.describe(), node.binary_path, number
                )
            )
    return AttachPlan(specs, unobservable)


def _kernel_spec(index: int, node: NodeLike, symbol: str, features: KernelFeatures) -> AttachSpec:
    source = KERNEL_SOURCES.get(symbol)
    if source is None:
        raise CollectorEnvironmentError(
            f"kernel symbol {symbol!r} has no probe (observable kernel symbols: "
            f"{', '.join(sorted(KERNEL_SOURCES))})"
        )
    choice = features.choose(source.category, source.variants)
    if choice.attach_type is None:
        raise CollectorEnvironmentError(
            f"kernel function {symbol} ({source.category}): {choice.reason}"
        )
    object_name, program, target = source.variants[choice.attach_type]
    return AttachSpec(
        index,
        node.purl,
        node.symbol,
        node.node_hash,
        source.category,
        source.kind,
        choice.attach_type,
        object_name,
        program,
        target,
    )


def _user_type(node: NodeLike) -> str:
    return next((t for t in node.probe_types or () if t in USER_TYPES), "uprobe")


def _uprobe_spec(index: int, node: NodeLike, symbol: str, features: KernelFeatures) -> AttachSpec:
    if not features.has("uprobes"):
        raise CollectorEnvironmentError(
            "kernel has no uprobes: user-space functions are not observable"
        )
    attach_type = _user_type(node)
    if attach_type == "usdt":
        return _usdt_spec(index, node, features)
    if attach_type == "uretprobe":
        choice = features.choose("function-return")
        if choice.attach_type is None:
            raise CollectorEnvironmentError(f"return probes unavailable: {choice.reason}")
    binary = node.binary_path or find_binary(node.purl, node.symbol)
    resolved = resolve_symbol(binary, symbol)
    if node.build_id and resolved.build_id and node.build_id.lower() != resolved.build_id:
        raise CollectorEnvironmentError(
            f"build-id {resolved.build_id} differs from the function map's {node.build_id}: "
            "a different build is deployed",
            path=binary,
        )
    object_name, program, kind, category = SPECIAL_UPROBES.get(
        symbol, (GENERIC_OBJECT, GENERIC_PROGRAM, KIND_FUNCTION, "function")
    )
    if attach_type == "uretprobe":
        # On return the arguments are gone: every function uses the generic return program.
        object_name, program, kind, category = (
            GENERIC_OBJECT,
            GENERIC_RETURN_PROGRAM,
            KIND_FUNCTION,
            "function-return",
        )
    return AttachSpec(
        index,
        node.purl,
        node.symbol,
        node.node_hash,
        category,
        kind,
        attach_type,
        object_name,
        program,
        binary,
        resolved.offset,
        resolved.build_id,
        map_build_id=node.build_id,
    )


def _usdt_spec(index: int, node: NodeLike, features: KernelFeatures) -> AttachSpec:
    """A USDT node: `provider:name` names a probe of the binary's .note.stapsdt; any other
    symbol names a CPython audit event, observed through the binary's python:audit probe."""
    choice = features.choose("usdt")
    if choice.attach_type is None:
        raise CollectorEnvironmentError(f"USDT probes unavailable: {choice.reason}")
    if not node.binary_path:
        raise CollectorEnvironmentError(
            f"USDT node {node.symbol}: a binary_path is needed (the binary carrying the note)"
        )
    binary = node.binary_path
    audit = ":" not in node.symbol
    label = "{}:{}".format(*AUDIT_PROBE) if audit else node.symbol
    probe = find_probe(binary, label)
    _, version = read_probes(binary)
    build_id = index_binary(str(Path(binary).resolve())).build_id
    if node.build_id and build_id and node.build_id.lower() != build_id:
        raise CollectorEnvironmentError(
            f"build-id {build_id} differs from the function map's {node.build_id}: "
            "a different build is deployed",
            path=binary,
        )
    if audit and len(probe.args) < 2:
        raise CollectorEnvironmentError(
            f"USDT {label}: unsupported argument spec {probe.arg_spec!r}", path=binary
        )
    if audit and len(node.symbol.encode()) >= AUDIT_NAME_LEN:
        raise CollectorEnvironmentError(
            f"audit event name longer than {AUDIT_NAME_LEN - 1} bytes: {node.symbol!r}"
        )
    return AttachSpec(
        index,
        node.purl,
        node.symbol,
        node.node_hash,
        "usdt",
        audit_kind(node.symbol) if audit else KIND_FUNCTION,
        "usdt",
        USDT_OBJECT,
        AUDIT_PROGRAM if audit else USDT_PROGRAM,
        binary,
        probe.offset,
        build_id,
        ref_ctr_offset=probe.semaphore_offset,
        usdt_args=probe.args,
        audit_event=node.symbol if audit else None,
        python_version=version,
        map_build_id=node.build_id,
    )


@dataclass(frozen=True)
class _SpecNode:
    """A spec seen as the node it came from (NodeLike), to resolve it again."""

    purl: str
    symbol: str
    node_hash: str
    binary_path: str | None
    build_id: str | None
    probe_types: tuple[str, ...] | None


def reresolve(spec: AttachSpec, features: KernelFeatures) -> AttachSpec:
    """A user-space spec resolved again from its binary as it is on disk now (a replaced
    build: new offsets, new build id), same index (its BPF cookie). Raises what build_plan
    turns into "not observable" (symbol gone, build id not the map's...). The ELF index is
    keyed by the file's identity (device, inode, mtime, size): the replaced file is read anew."""
    node = _SpecNode(
        spec.purl,
        spec.symbol,
        spec.node_hash,
        spec.target,
        spec.map_build_id,
        (spec.attach_type,),
    )
    return _uprobe_spec(spec.index, node, normalize_symbol(spec.symbol), features)
