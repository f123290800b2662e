"""Kernel feature detection (`stella probes doctor`) and the attach type chosen per category.

Nothing is assumed: each feature is probed on this host, and each probe category picks the
first attach type of its fallback order whose features are all present.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .libbpf import (
    BPF_MAP_TYPE_RINGBUF,
    BPF_PROG_TYPE_KPROBE,
    BPF_PROG_TYPE_TRACEPOINT,
    BPF_FUNC_get_attach_cookie,
    Libbpf,
)
from .lockfile import ATTACH_TYPE_FEATURES, BASE_FEATURES

DEFAULT_TRACEFS: Final = Path("/sys/kernel/tracing")
BTF_PATH: Final = Path("/sys/kernel/btf/vmlinux")
EVENT_SOURCES: Final = Path("/sys/bus/event_source/devices")

CAP_SYS_ADMIN: Final = 21
CAP_PERFMON: Final = 38
CAP_BPF: Final = 39

TRACEFS_HINT: Final = "mount it: mount -t tracefs nodev /sys/kernel/tracing"
CAPABILITY_HINT: Final = (
    "run as root, or grant CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on kernels before 5.8), "
    "e.g. setcap cap_bpf,cap_perfmon+ep or a systemd AmbientCapabilities= line"
)

# Fallback order per probe category (first available wins).
CATEGORIES: Final[dict[str, tuple[str, ...]]] = {
    "function": ("uprobe",),
    "tls": ("uprobe",),
    "libc-net": ("uprobe",),
    "file": ("kprobe", "tracepoint"),
    "net": ("kprobe", "tracepoint"),
    "exec": ("tracepoint",),
}


@dataclass(frozen=True)
class Feature:
    name: str
    available: bool
    detail: str


@dataclass(frozen=True)
class CategoryChoice:
    category: str
    attach_type: str | None
    reason: str


@dataclass
class KernelFeatures:
    features: dict[str, Feature] = field(default_factory=dict)
    tracefs_path: Path = DEFAULT_TRACEFS

    def has(self, name: str) -> bool:
        feature = self.features.get(name)
        return bool(feature and feature.available)

    def choose(self, category: str) -> CategoryChoice:
        order = CATEGORIES[category]
        skipped: list[str] = []
        for attach_type in order:
            missing = [
                f for f in (*BASE_FEATURES, *ATTACH_TYPE_FEATURES[attach_type]) if not self.has(f)
            ]
            if not missing:
                if skipped:
                    reason = f"fallback {' → '.join(order)}: " + "; ".join(skipped)
                else:
                    reason = f"first choice of {' → '.join(order)}"
                return CategoryChoice(category, attach_type, reason)
            skipped.append(f"{attach_type} unavailable ({', '.join(missing)} missing)")
        return CategoryChoice(category, None, "; ".join(skipped))

    def choices(self) -> list[CategoryChoice]:
        return [self.choose(category) for category in CATEGORIES]


def _effective_caps() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def _kernel_config(name: str) -> str | None:
    """A CONFIG_ value from /proc/config.gz, when the kernel exposes its config."""
    try:
        with gzip.open("/proc/config.gz", "rt") as handle:
            for line in handle:
                if line.startswith(name + "="):
                    return line.strip().split("=", 1)[1]
    except OSError:
        return None
    return ""


def _kernel_has_symbol(name: str) -> bool:
    """Whether /proc/kallsyms lists a kernel function (names are visible even without root)."""
    needle = f" {name}\n"
    try:
        with open("/proc/kallsyms") as handle:
            return any(line.endswith(needle) for line in handle)
    except OSError:
        return False


def _tracefs_mounted(path: Path) -> bool:
    return (path / "events").is_dir()


def detect(tracefs_path: Path = DEFAULT_TRACEFS) -> KernelFeatures:
    out = KernelFeatures(tracefs_path=tracefs_path)

    def put(name: str, available: bool, detail: str) -> None:
        out.features[name] = Feature(name, available, detail)

    put(
        "btf",
        BTF_PATH.exists(),
        str(BTF_PATH)
        if BTF_PATH.exists()
        else f"{BTF_PATH} missing: CO-RE objects cannot be relocated",
    )
    caps = _effective_caps()
    names = {CAP_BPF: "CAP_BPF", CAP_PERFMON: "CAP_PERFMON", CAP_SYS_ADMIN: "CAP_SYS_ADMIN"}
    held = [name for bit, name in names.items() if caps >> bit & 1]
    enough = bool(caps >> CAP_SYS_ADMIN & 1) or (
        bool(caps >> CAP_BPF & 1) and bool(caps >> CAP_PERFMON & 1)
    )
    put(
        "capabilities",
        enough,
        ("held: " + ", ".join(held)) if enough else f"missing capabilities: {CAPABILITY_HINT}",
    )
    try:
        lib: Libbpf | None = Libbpf.get()
    except Exception as exc:
        lib = None
        put("libbpf", False, str(exc))
    else:
        put("libbpf", True, "libbpf.so.1 loaded")
    if lib is not None:
        rc = lib.lib.libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_TRACEPOINT, None)
        if rc == 1:
            put("bpf_syscall", True, "bpf() allowed: a tracepoint program loaded")
        elif rc in (-1, -13) or not enough:
            # libbpf's probe reports a refused bpf() as "unsupported" (0): the capabilities tell.
            put("bpf_syscall", False, f"bpf() not permitted: {CAPABILITY_HINT}")
        else:
            put(
                "bpf_syscall",
                False,
                f"bpf() failed ({os.strerror(-rc) if rc < 0 else 'unsupported'})",
            )
        allowed = out.has("bpf_syscall")
        ring = lib.lib.libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, None) == 1
        put(
            "ringbuf",
            ring,
            "BPF_MAP_TYPE_RINGBUF"
            if ring
            else ("cannot test without bpf()" if not allowed else "no ring buffer (kernel < 5.8)"),
        )
        cookie = (
            lib.lib.libbpf_probe_bpf_helper(BPF_PROG_TYPE_KPROBE, BPF_FUNC_get_attach_cookie, None)
            == 1
        )
        put(
            "bpf_cookie",
            cookie,
            "bpf_get_attach_cookie helper"
            if cookie
            else ("cannot test without bpf()" if not allowed else "no BPF cookies (kernel < 5.15)"),
        )
        direct = _kernel_config("CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS")
        fentry = BTF_PATH.exists() and direct == "y"
        put(
            "fentry",
            fentry,
            "BTF and ftrace direct calls (BPF trampolines); no fentry objects are shipped yet"
            if fentry
            else f"no BPF trampolines (CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS={direct or 'unknown'})",
        )
    else:
        for name in ("bpf_syscall", "ringbuf", "bpf_cookie", "fentry"):
            put(name, False, "libbpf not available")
    mounted = _tracefs_mounted(tracefs_path)
    put(
        "tracefs",
        mounted,
        f"mounted at {tracefs_path}"
        if mounted
        else f"not mounted at {tracefs_path}: {TRACEFS_HINT}",
    )
    kprobes = (EVENT_SOURCES / "kprobe").exists() or (tracefs_path / "kprobe_events").exists()
    put(
        "kprobes",
        kprobes,
        "kprobe PMU present" if kprobes else "kernel built without kprobes (CONFIG_KPROBES unset)",
    )
    uprobes = (EVENT_SOURCES / "uprobe").exists() or (tracefs_path / "uprobe_events").exists()
    put("uprobes", uprobes, "uprobe PMU present" if uprobes else "kernel built without uprobes")
    multi = uprobes and _kernel_has_symbol("bpf_uprobe_multi_link_attach")
    put(
        "uprobe_multi",
        multi,
        "BPF uprobe_multi links (detach removes the breakpoint at once; used for uprobes)"
        if multi
        else "no uprobe_multi links (kernel < 6.6): perf-event uprobes are used",
    )
    return out
