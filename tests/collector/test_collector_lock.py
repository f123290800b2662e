"""The airgap loader: objects match the lock, tampered objects are refused, builds reproduce."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from collector_support import REPO_ROOT

from stella_bundle.collector.events import StellaConfig
from stella_bundle.collector.features import KernelFeatures
from stella_bundle.collector.loader import ProbeRuntime, ProbeSet
from stella_bundle.collector.lockfile import LOCK_NAME, PACKAGE_BPF_DIR, load_lock
from stella_bundle.errors import ProbeIntegrityError

EXPECTED_OBJECTS = {
    "uprobe_node.bpf.o",
    "file.bpf.o",
    "exec.bpf.o",
    "net.bpf.o",
    "tls.bpf.o",
    "trial.bpf.o",
    "usdt.bpf.o",
    "cgroup.bpf.o",
}


def test_lock_covers_every_shipped_object_with_its_digest() -> None:
    lock = load_lock(PACKAGE_BPF_DIR / LOCK_NAME)
    assert set(lock.objects) == EXPECTED_OBJECTS
    assert {p.name for p in PACKAGE_BPF_DIR.glob("*.bpf.o")} == EXPECTED_OBJECTS
    for name, entry in lock.objects.items():
        data = (PACKAGE_BPF_DIR / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry.sha256
        assert entry.size == len(data)
    programs = {p.name: p.attach_type for e in lock.objects.values() for p in e.programs}
    assert programs["stella_uprobe_node"] == "uprobe"
    assert programs["stella_tp_openat"] == "tracepoint"
    assert programs["stella_kp_openat"] == "kprobe"
    assert programs["stella_tp_inet_sock_set_state"] == "tracepoint"
    assert {"stella_ssl_read", "stella_ssl_write", "stella_ssl_do_handshake"} <= programs.keys()
    assert {"stella_libc_connect", "stella_libc_accept", "stella_tp_exec"} <= programs.keys()


def test_repository_lock_and_package_lock_are_identical() -> None:
    assert (REPO_ROOT / "probes" / LOCK_NAME).read_bytes() == (
        PACKAGE_BPF_DIR / LOCK_NAME
    ).read_bytes()


def _copy_probe_set(tmp_path: Path) -> Path:
    target = tmp_path / "probes"
    shutil.copytree(PACKAGE_BPF_DIR, target)
    return target


def test_object_whose_bytes_differ_from_the_lock_is_refused(tmp_path: Path) -> None:
    directory = _copy_probe_set(tmp_path)
    victim = directory / "uprobe_node.bpf.o"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    probe_set = ProbeSet.open(directory)
    with pytest.raises(ProbeIntegrityError, match="does not match the lock"):
        probe_set.verified("uprobe_node.bpf.o")
    assert ProbeIntegrityError.exit_code == 1


@pytest.mark.ebpf
def test_runtime_never_loads_a_tampered_object(
    ebpf: None, tmp_path: Path, features: KernelFeatures
) -> None:
    directory = _copy_probe_set(tmp_path)
    (directory / "exec.bpf.o").write_bytes(b"\x7fELF not the locked object")
    runtime = ProbeRuntime(ProbeSet.open(directory), features)
    with pytest.raises(ProbeIntegrityError, match=r"exec\.bpf\.o.*refusing to load"):
        runtime.load({"exec.bpf.o": {"stella_tp_exec"}}, StellaConfig())
    assert runtime.objects == {}


def test_object_missing_from_the_lock_is_refused(tmp_path: Path) -> None:
    directory = _copy_probe_set(tmp_path)
    with pytest.raises(ProbeIntegrityError, match="not listed in the lock"):
        ProbeSet.open(directory).verified("extra.bpf.o")


def test_cli_list_shows_refused_objects(tmp_path: Path, run_cli: object) -> None:
    directory = _copy_probe_set(tmp_path)
    (directory / "net.bpf.o").write_bytes(b"tampered")
    result = run_cli("probes", "list", "--probes-dir", str(directory), "--format", "json")  # type: ignore[operator]
    assert result.exit_code == 0
    assert '"status": "ok"' in result.stdout
    assert "REFUSED" in result.stdout


@pytest.mark.skipif(
    shutil.which("clang") is None and not os.environ.get("CI"), reason="needs clang"
)
def test_rebuild_reproduces_the_locked_digests(tmp_path: Path) -> None:
    out = tmp_path / "objects"
    lock = tmp_path / LOCK_NAME
    env = dict(os.environ, STELLA_PROBES_OUT=str(out), STELLA_PROBES_LOCKS=str(lock))
    subprocess.run(["bash", str(REPO_ROOT / "probes" / "build.sh")], check=True, env=env)
    rebuilt = load_lock(lock)
    shipped = load_lock(PACKAGE_BPF_DIR / LOCK_NAME)
    assert {n: e.sha256 for n, e in rebuilt.objects.items()} == {
        n: e.sha256 for n, e in shipped.objects.items()
    }
    assert rebuilt.probe_set_sha256 == shipped.probe_set_sha256
