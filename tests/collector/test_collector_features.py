"""Kernel feature detection, category fallbacks, and the documented environment messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from collector_support import REPO_ROOT

from stella_bundle.collector.features import TRACEFS_HINT, KernelFeatures, detect
from stella_bundle.collector.loader import ProbeRuntime, ProbeSet
from stella_bundle.collector.plan import category_programs
from stella_bundle.errors import CollectorEnvironmentError

KPROBES = Path("/sys/bus/event_source/devices/kprobe").exists()


@pytest.mark.ebpf
def test_doctor_detects_this_kernel(ebpf: None, features: KernelFeatures) -> None:
    for name in ("btf", "bpf_syscall", "ringbuf", "bpf_cookie", "tracefs", "uprobes"):
        assert features.has(name), features.features[name]
    assert features.has("kprobes") == KPROBES


@pytest.mark.ebpf
@pytest.mark.skipif(KPROBES, reason="this host has kprobes: the fallback case is not reachable")
def test_without_kprobes_net_and_file_fall_back_to_tracepoints(
    ebpf: None, features: KernelFeatures, run_cli: object
) -> None:
    programs = category_programs()
    for category in ("net", "file"):
        choice = features.choose(category, programs[category])
        assert choice.attach_type != "kprobe"
        assert "kprobe unavailable (ENOENT)" in choice.reason
    result = run_cli("probes", "doctor", "--format", "json")  # type: ignore[operator]
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["features"]["kprobes"]["available"] is False
    assert doc["attach_types"]["kprobe"]["available"] is False
    assert "without kprobes" in doc["attach_types"]["kprobe"]["meaning"]
    assert doc["categories"]["function"]["attach_type"] == "uprobe"
    assert (
        "fentry → kprobe → tp_btf → raw_tracepoint → tracepoint"
        in (doc["categories"]["file"]["reason"])
    )


def test_fallback_order_prefers_kprobes_when_present() -> None:
    from stella_bundle.collector.features import Feature

    names = ("btf", "bpf_syscall", "ringbuf", "bpf_cookie", "tracefs", "kprobe", "tracepoint")
    with_kprobes = KernelFeatures({n: Feature(n, True, "") for n in names})
    assert with_kprobes.choose("net", ("kprobe", "tracepoint")).attach_type == "kprobe"
    # fentry first in the order, but without fentry programs or support kprobe is chosen.
    assert with_kprobes.choose("net").reason.startswith("fallback")
    no_tracefs = KernelFeatures({n: Feature(n, n not in ("tracefs", "kprobe"), "") for n in names})
    choice = no_tracefs.choose("file", ("kprobe", "tracepoint"))
    assert choice.attach_type is None and "no attach type can reach it" in choice.reason


@pytest.mark.ebpf
def test_unmounted_tracefs_is_detected_and_explained(
    ebpf: None, tmp_path: Path, features: KernelFeatures
) -> None:
    # An empty directory stands for an unmounted tracefs (the real one is shared, not unmounted).
    empty = tmp_path / "tracing"
    empty.mkdir()
    detected = detect(empty)
    assert not detected.has("tracefs")
    assert TRACEFS_HINT in detected.features["tracefs"].detail
    runtime = ProbeRuntime(ProbeSet.open(), detected)
    from stella_bundle.collector.events import StellaConfig

    runtime.load({"file.bpf.o": {"stella_tp_openat"}}, StellaConfig())
    try:
        with pytest.raises(CollectorEnvironmentError, match="tracefs is not mounted") as info:
            runtime.attach_tracepoint(
                "file.bpf.o", "stella_tp_openat", "syscalls/sys_enter_openat", 0
            )
        assert "mount -t tracefs nodev /sys/kernel/tracing" in str(info.value)
    finally:
        runtime.close()


NON_ROOT_SCRIPT = """
import sys
from stella_bundle.collector.features import detect
from stella_bundle.collector.loader import ProbeRuntime, ProbeSet
from stella_bundle.collector.plan import category_programs
from stella_bundle.collector.events import StellaConfig
from stella_bundle.errors import StellaError
f = detect()
print("caps:", f.features["capabilities"].detail)
try:
    ProbeRuntime(ProbeSet.open(), f).load({"exec.bpf.o": {"stella_tp_exec"}}, StellaConfig())
except StellaError as exc:
    print("error:", exc.describe())
    sys.exit(exc.exit_code)
print("loaded")
"""


@pytest.mark.ebpf
@pytest.mark.skipif(
    shutil.which("setpriv") is None and not os.environ.get("CI"), reason="needs setpriv"
)
def test_process_without_capabilities_gets_the_capability_message(ebpf: None) -> None:
    # uid 0 with every capability dropped (inheritable, ambient, bounding): to the kernel this is
    # an unprivileged process. A uid other than 0 cannot be used here because the interpreter's
    # packages live under /root (mode 0700) on this machine.
    result = subprocess.run(
        [
            "setpriv",
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
            sys.executable,
            "-c",
            NON_ROOT_SCRIPT,
        ],
        capture_output=True,
        text=True,
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "missing capabilities" in result.stdout
    assert "permission denied by the kernel" in result.stdout
    assert "CAP_BPF and CAP_PERFMON" in result.stdout


@pytest.mark.ebpf
@pytest.mark.skipif(
    shutil.which("setpriv") is None and not os.environ.get("CI"), reason="needs setpriv"
)
def test_non_root_user_is_refused_bpf_by_the_kernel(ebpf: None) -> None:
    # The nobody user cannot import our dependencies (they live under /root), so this checks the
    # kernel side with the system python and ctypes only: creating any BPF map fails with EPERM.
    script = (
        "import ctypes; f = ctypes.CDLL('libbpf.so.1').bpf_map_create; "
        "f.argtypes = [ctypes.c_int, ctypes.c_char_p] + [ctypes.c_uint32] * 3 + [ctypes.c_void_p]; "
        "print(f(2, b'probe', 4, 4, 1, None))"
    )
    result = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) in (-1, -13)  # -EPERM / -EACCES
