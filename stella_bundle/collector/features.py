"""Kernel feature detection (`stella probes doctor`) and the attach type chosen per category.

Nothing is assumed: each feature is probed on this host, every attach type is tried by loading
and attaching a tiny program of that type (trial.py), and each probe category picks the first
attach type of its fallback order that loaded here and for which the category has a program.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
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
from .lockfile import (
    ATTACH_TYPE_FEATURES,
    BASE_FEATURES,
    LOCK_NAME,
    PACKAGE_BPF_DIR,
    load_lock,
    verified_bytes,
)
from .trial import TRIAL_OBJECT, TrialResult, disabled_from_env, lockdown_mode, run_trials

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

# Kernel categories: BPF trampolines first (cheapest, typed), then kprobes, then BTF-typed and
# raw tracepoints, classic tracepoints last (bench/probes.py measures the kernel types).
KERNEL_ORDER: Final = ("fentry", "kprobe", "tp_btf", "raw_tracepoint", "tracepoint")
# Fallback order per probe category (first available wins).
CATEGORIES: Final[dict[str, tuple[str, ...]]] = {
    "function": ("uprobe",),
    "function-return": ("uretprobe",),
    "usdt": ("usdt",),
    "tls": ("uprobe",),
    "libc-net": ("uprobe",),
    "file": KERNEL_ORDER,
    "net": KERNEL_ORDER,
    "exec": KERNEL_ORDER,
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
    # attach type -> what its trial load and attach gave (every type of trial.ATTACH_TYPES)
    attach_types: dict[str, TrialResult] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        feature = self.features.get(name)
        if feature is not None:
            return feature.available
        trial = self.attach_types.get(name)
        return bool(trial and trial.available)

    def _why_not(self, name: str) -> str:
        """Short: the attach types table of the doctor carries the full evidence."""
        trial = self.attach_types.get(name)
        if trial is not None:
            return trial.errno_name or trial.stage
        return f"{name} missing"

    def choose(self, category: str, programs: Iterable[str] | None = None) -> CategoryChoice:
        """The first type of the category's order that is available here and, when `programs`
        is given, among the types a probe has a program for."""
        order = CATEGORIES[category]
        offered = set(programs) if programs is not None else set(order)
        skipped: list[str] = []
        for attach_type in order:
            if attach_type not in offered:
                skipped.append(f"{attach_type} (no program for it)")
                continue
            missing = [
                f for f in (*BASE_FEATURES, *ATTACH_TYPE_FEATURES[attach_type]) if not self.has(f)
            ]
            if not missing:
                if skipped:
                    reason = f"fallback {' → '.join(order)}: " + "; ".join(skipped)
                else:
                    reason = f"first choice of {' → '.join(order)}"
                return CategoryChoice(category, attach_type, reason)
            skipped.append(
                f"{attach_type} unavailable ({', '.join(self._why_not(m) for m in missing)})"
            )
        return CategoryChoice(category, None, "no attach type can reach it: " + "; ".join(skipped))

    def choices(self, programs: Mapping[str, Iterable[str]] | None = None) -> list[CategoryChoice]:
        """Every category's choice; `programs`: the attach types each category has programs
        for (plan.category_programs()), so a type no probe is written for is not chosen."""
        return [
            self.choose(category, None if programs is None else programs.get(category))
            for category in CATEGORIES
        ]


def _effective_caps() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def _tracefs_mounted(path: Path) -> bool:
    return (path / "events").is_dir()


def _trial_object(probes_dir: Path | None) -> tuple[bytes | None, str]:
    directory = probes_dir if probes_dir is not None else PACKAGE_BPF_DIR
    try:
        lock = load_lock(directory / LOCK_NAME)
        return verified_bytes(lock, directory, TRIAL_OBJECT), ""
    except Exception as exc:  # a missing or tampered trial object: nothing is tried, and why
        return None, f"trial object unusable: {exc}"


def detect(
    tracefs_path: Path = DEFAULT_TRACEFS,
    disable: Iterable[str] | None = None,
    probes_dir: Path | None = None,
) -> KernelFeatures:
    """Probe this host. `disable`: attach types to count as unavailable without trying them
    (default: the STELLA_PROBES_DISABLE environment variable, a comma-separated list)."""
    out = KernelFeatures(tracefs_path=tracefs_path)
    disabled = frozenset(disable) if disable is not None else disabled_from_env()

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
        data, problem = _trial_object(probes_dir)
        if not allowed:
            data, problem = None, "cannot try without bpf()"
        out.attach_types = run_trials(lib, data, disabled, problem)
    else:
        for name in ("bpf_syscall", "ringbuf", "bpf_cookie"):
            put(name, False, "libbpf not available")
        out.attach_types = run_trials(None, None, disabled, "libbpf not available")
    # Shown for the record (status "yes": not locked down); the trial loads, not this, decide
    # which attach types are available.
    mode = lockdown_mode()
    if mode is None:
        put("lockdown", False, "lockdown mode unknown (securityfs unreadable)")
    elif mode == "none":
        put("lockdown", True, "not locked down")
    else:
        put("lockdown", False, f"locked down ({mode}): the kernel may refuse some BPF programs")
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
    return out
