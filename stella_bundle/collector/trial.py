"""Attach types detected by trying them: a tiny program of each type loaded and attached.

Kernel config says what was built, not what is allowed: this machine's kernel has BTF and ftrace
direct calls, yet refuses fentry programs (EPERM, kernel lockdown in integrity mode). So each
type is tried with its program from the locked trial object (probes/trial.bpf.c): load it alone,
attach it to a harmless target, detach. The errno of the step that failed, and what it means
here, is the evidence `stella probes doctor` shows.

Harmless targets: user-space types attach to a scratch file no process maps (the kernel reads
the instruction only when a process maps the page, so nothing ever traps and no USDT semaphore
of a real process is touched); kernel types attach to sched_process_exec or tcp_connect for the
microseconds of the trial.

`STELLA_PROBES_DISABLE=fentry,tp_btf` (or `detect(disable=...)`) makes the named types count as
unavailable without trying them: the switch tests use to walk every fallback on one kernel.
"""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .libbpf import (
    BPF_TRACE_FENTRY,
    BPF_TRACE_FEXIT,
    BPF_TRACE_UPROBE_MULTI,
    BpfError,
    Libbpf,
)

TRIAL_OBJECT: Final = "trial.bpf.o"
DISABLE_ENV: Final = "STELLA_PROBES_DISABLE"
LOCKDOWN_PATH: Final = Path("/sys/kernel/security/lockdown")
KPROBE_PMU: Final = Path("/sys/bus/event_source/devices/kprobe")

# Every attach type the product names, in the order the doctor lists them.
ATTACH_TYPES: Final = (
    "uprobe",
    "uretprobe",
    "uprobe_multi",
    "usdt",
    "tracepoint",
    "raw_tracepoint",
    "tp_btf",
    "fentry",
    "fexit",
    "kprobe",
    "kretprobe",
)

# attach type -> trial program in trial.bpf.o
TRIAL_PROGRAMS: Final[dict[str, str]] = {
    "uprobe": "stella_trial_uprobe",
    "uretprobe": "stella_trial_uretprobe",
    "uprobe_multi": "stella_trial_uprobe",
    "usdt": "stella_trial_usdt",
    "tracepoint": "stella_trial_tracepoint",
    "raw_tracepoint": "stella_trial_raw_tracepoint",
    "tp_btf": "stella_trial_tp_btf",
    "fentry": "stella_trial_fentry",
    "fexit": "stella_trial_fexit",
    "kprobe": "stella_trial_kprobe",
    "kretprobe": "stella_trial_kretprobe",
}

TRIAL_COOKIE: Final = 0x5354454C  # any value: the kernel must accept a cookie for the type
# Distinct offsets in the scratch file: the kernel refuses two uprobes at one offset whose
# ref_ctr_offset differ, so the USDT trial must not share the plain uprobes' offset.
_SCRATCH_SIZE: Final = 4096
_USDT_OFFSET: Final = 64
_USDT_SEMAPHORE: Final = 2048


@dataclass(frozen=True)
class TrialResult:
    """What the kernel answered for one attach type."""

    attach_type: str
    available: bool
    stage: str  # "attached", "load", "attach", "disabled", "not tried"
    errno: int | None
    meaning: str

    @property
    def errno_name(self) -> str | None:
        if self.errno is None:
            return None
        return errno.errorcode.get(self.errno, "ENOTSUPP" if self.errno == 524 else None)

    def evidence(self) -> str:
        if self.available:
            return self.meaning
        code = f"{self.errno_name or self.errno} at {self.stage}: " if self.errno else ""
        return code + self.meaning


def disabled_from_env(environ: dict[str, str] | None = None) -> frozenset[str]:
    raw = (environ if environ is not None else dict(os.environ)).get(DISABLE_ENV, "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def lockdown_mode() -> str | None:
    """The kernel lockdown mode (none, integrity, confidentiality), or None when unknown.

    Read from securityfs; when it is not mounted (this machine), it is mounted in a private
    mount namespace of a child process, so the host's mounts are left as they are.
    """

    def parse(text: str) -> str | None:
        for word in text.split():
            if word.startswith("[") and word.endswith("]"):
                return word[1:-1]
        return None

    try:
        return parse(LOCKDOWN_PATH.read_text())
    except OSError:
        pass
    try:
        result = subprocess.run(
            [
                "unshare",
                "--mount",
                "sh",
                "-c",
                "mount -t securityfs securityfs /sys/kernel/security 2>/dev/null && "
                "cat /sys/kernel/security/lockdown",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return parse(result.stdout)


def meaning_of(attach_type: str, stage: str, number: int, lockdown: str | None) -> str:
    """What an errno of a trial load or attach means for this type on this kernel."""
    tracing = attach_type in ("fentry", "fexit")
    if number in (errno.EPERM, errno.EACCES):
        if lockdown in ("integrity", "confidentiality"):
            if tracing:
                return (
                    f"kernel lockdown ({lockdown}) refuses BPF tracing programs "
                    "(fentry/fexit need BPF trampolines); other program types still load"
                )
            return f"refused by the kernel (lockdown: {lockdown})"
        if tracing:
            return (
                "refused although bpf() is allowed for other types: the kernel forbids BPF "
                "trampolines here (lockdown or an LSM); lockdown mode unknown"
            )
        return "permission denied: run as root or with CAP_BPF and CAP_PERFMON"
    if attach_type in ("kprobe", "kretprobe") and number == errno.ENOENT:
        if not KPROBE_PMU.exists():
            return (
                "no kprobe PMU and no kprobe_events: kernel built without kprobes "
                "(CONFIG_KPROBES unset)"
            )
        return "tcp_connect cannot be kprobed on this kernel"
    if number == errno.EINVAL and stage == "load":
        return "the kernel does not know this program type, attach type or helper (too old)"
    if number == errno.EINVAL and stage == "attach":
        return "the kernel refused the attach parameters (no BPF cookie for this type?)"
    if number == errno.ESRCH:
        return "the target is not in the kernel's BTF"
    if number in (errno.EOPNOTSUPP, 524):
        return "not supported by this kernel"
    if number == errno.ENOENT and attach_type == "tracepoint":
        return (
            "tracepoint not found: tracefs not mounted? mount -t tracefs nodev /sys/kernel/tracing"
        )
    return os.strerror(number)


def _scratch_file() -> str:
    """A file of NOPs nobody maps: user-space trial probes are registered on it, never hit."""
    with tempfile.NamedTemporaryFile(prefix="stella-trial-", delete=False) as handle:
        handle.write(b"\x90" * _SCRATCH_SIZE)
    return handle.name


def run_trials(
    lib: Libbpf | None,
    object_bytes: bytes | None,
    disable: Iterable[str] = (),
    object_problem: str = "",
) -> dict[str, TrialResult]:
    """Try every attach type; `object_bytes` None: nothing can be tried (`object_problem`)."""
    disabled = set(disable)
    lockdown: list[str | None] = []  # computed once, only when an errno needs explaining

    def lockdown_once() -> str | None:
        if not lockdown:
            lockdown.append(lockdown_mode())
        return lockdown[0]

    results: dict[str, TrialResult] = {}
    scratch = _scratch_file() if object_bytes is not None else ""
    try:
        for attach_type in ATTACH_TYPES:
            if attach_type in disabled:
                results[attach_type] = TrialResult(
                    attach_type, False, "disabled", None, f"disabled by {DISABLE_ENV} (test switch)"
                )
            elif object_bytes is None or lib is None:
                results[attach_type] = TrialResult(
                    attach_type, False, "not tried", None, object_problem
                )
            else:
                results[attach_type] = _try(lib, object_bytes, attach_type, scratch, lockdown_once)
    finally:
        if scratch:
            os.unlink(scratch)
    return results


def _attacher(lib: Libbpf, attach_type: str, scratch: str) -> Callable[[int], tuple[int, bool]]:
    """A function attaching the loaded trial program; returns (link, is a raw fd)."""
    cookie = TRIAL_COOKIE
    table: dict[str, Callable[[int], tuple[int, bool]]] = {
        "uprobe": lambda p: (lib.attach_uprobe(p, scratch, 0, cookie), False),
        "uretprobe": lambda p: (lib.attach_uprobe(p, scratch, 0, cookie, retprobe=True), False),
        "uprobe_multi": lambda p: (lib.attach_uprobe_multi(p, scratch, 0, cookie), True),
        "usdt": lambda p: (
            lib.attach_uprobe(p, scratch, _USDT_OFFSET, cookie, ref_ctr_offset=_USDT_SEMAPHORE),
            False,
        ),
        "tracepoint": lambda p: (
            lib.attach_tracepoint(p, "sched", "sched_process_exec", cookie),
            False,
        ),
        "raw_tracepoint": lambda p: (
            lib.attach_raw_tracepoint(p, "sched_process_exec", cookie),
            True,
        ),
        "tp_btf": lambda p: (lib.attach_raw_tracepoint(p, None, cookie), True),
        "fentry": lambda p: (lib.attach_tracing(p, BPF_TRACE_FENTRY, cookie), True),
        "fexit": lambda p: (lib.attach_tracing(p, BPF_TRACE_FEXIT, cookie), True),
        "kprobe": lambda p: (lib.attach_kprobe(p, "tcp_connect", cookie), False),
        "kretprobe": lambda p: (lib.attach_kprobe(p, "tcp_connect", cookie, retprobe=True), False),
    }
    return table[attach_type]


def _try(
    lib: Libbpf,
    data: bytes,
    attach_type: str,
    scratch: str,
    lockdown: Callable[[], str | None],
) -> TrialResult:
    program_name = TRIAL_PROGRAMS[attach_type]
    try:
        handle, _buffer = lib.open_mem(data, "stella_trial")
    except BpfError as exc:
        return TrialResult(
            attach_type, False, "load", exc.err, f"cannot open the trial object: {exc}"
        )
    try:
        programs = {lib.program_name(p): p for p in lib.programs(handle)}
        for name, program in programs.items():
            lib.lib.bpf_program__set_autoload(program, name == program_name)
        if attach_type == "uprobe_multi":
            lib.lib.bpf_program__set_expected_attach_type(
                programs[program_name], BPF_TRACE_UPROBE_MULTI
            )
        try:
            lib.check_int("bpf_object__load", lib.lib.bpf_object__load(handle))
        except BpfError as exc:
            return TrialResult(
                attach_type,
                False,
                "load",
                exc.err,
                meaning_of(attach_type, "load", exc.err, lockdown()),
            )
        try:
            link, raw_fd = _attacher(lib, attach_type, scratch)(programs[program_name])
        except BpfError as exc:
            return TrialResult(
                attach_type,
                False,
                "attach",
                exc.err,
                meaning_of(attach_type, "attach", exc.err, lockdown()),
            )
        if raw_fd:
            os.close(link)
        else:
            lib.destroy_link(link)
        return TrialResult(attach_type, True, "attached", None, "trial program loaded and attached")
    finally:
        lib.lib.bpf_object__close(handle)
