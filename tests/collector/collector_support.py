"""Collector test helpers: workload nodes, running the workload under a collector.

A uniquely named module (not conftest) so test modules can import it without colliding with
other areas' conftest modules."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stella_bundle.collector.containers import CgroupResolver
from stella_bundle.collector.features import KernelFeatures
from stella_bundle.collector.loader import ProbeRuntime, ProbeSet
from stella_bundle.collector.plan import AttachPlan, build_plan
from stella_bundle.collector.session import Collector, CollectorConfig, EvidenceSink, MemorySink
from stella_bundle.formats.function_map import ExpectedNode

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKLOAD_SOURCE = REPO_ROOT / "stella_bundle" / "demo_data" / "workload.c"
# A function that blocks until released (return probes; a second binary beside the workload).
BLOCKING_SOURCE = REPO_ROOT / "fixtures" / "workload" / "blocking.c"
WORKLOAD_PURL = "pkg:generic/stella-workload@1.0.0"
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
LIBCRYPTO = "/usr/lib/x86_64-linux-gnu/libcrypto.so.3"
KNOWN_FILE = "/etc/hostname"


def ebpf_ready() -> str | None:
    """Why eBPF tests cannot run here (None when they can)."""
    if os.geteuid() != 0:
        return "needs root"
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return "needs kernel BTF"
    if not Path("/sys/kernel/tracing/events").is_dir():
        return "needs tracefs mounted (scripts/setup.sh)"
    return None


def workload_nodes(workload: Path) -> list[ExpectedNode]:
    """The nodes the workload runs (with --crypto --connect --open KNOWN_FILE) plus one it never
    calls (stella_work_never)."""
    return [
        ExpectedNode.create(WORKLOAD_PURL, "stella_work_parse", binary_path=str(workload)),
        ExpectedNode.create(WORKLOAD_PURL, "stella_work_hot", binary_path=str(workload)),
        ExpectedNode.create("pkg:deb/debian/libssl3", "EVP_Digest", binary_path=LIBCRYPTO),
        ExpectedNode.create("pkg:deb/debian/libc6", "connect", binary_path=LIBC),
        ExpectedNode.create("pkg:generic/linux-kernel", "openat"),
        ExpectedNode.create("pkg:generic/linux-kernel", "inet_sock_set_state"),
        ExpectedNode.create(WORKLOAD_PURL, "stella_work_never", binary_path=str(workload)),
    ]


@dataclass
class Workload:
    process: subprocess.Popen[str]
    pid: int

    def go(self) -> dict[str, Any]:
        import json

        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert self.process.wait(timeout=120) == 0
        return dict(json.loads(line))


def start_workload(workload: Path, *args: str, cgroup_procs: Path | None = None) -> Workload:
    process = subprocess.Popen(
        [str(workload), "--wait", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    ready = process.stdout.readline().split()
    assert ready and ready[0] == "ready", ready
    pid = int(ready[1])
    if cgroup_procs is not None:
        cgroup_procs.write_text(f"{pid}\n")
    return Workload(process, pid)


@dataclass
class Run:
    collector: Collector
    sink: Any
    plan: AttachPlan
    output: dict[str, Any]
    hits: dict[str, int] = field(default_factory=dict)

    def records_for(self, symbol: str) -> list[dict[str, Any]]:
        return [r for r in self.sink.records if r["function_name"] == symbol]


def collect(
    workload: Path,
    features: KernelFeatures,
    *args: str,
    nodes: list[ExpectedNode] | None = None,
    config: CollectorConfig | None = None,
    sink: EvidenceSink | None = None,
    ring_size: int | None = None,
    cgroup_procs: Path | None = None,
    filter_pid: bool = True,
    hit_symbols: tuple[str, ...] = (),
    before_stop: Callable[[Collector], None] | None = None,
    resolver: CgroupResolver | None = None,
) -> Run:
    """Run the workload under a collector (in a thread) and stop it once the workload is done."""
    plan = build_plan(nodes if nodes is not None else workload_nodes(workload), features)
    work = start_workload(workload, *args, cgroup_procs=cgroup_procs)
    config = config or CollectorConfig()
    if filter_pid and not config.pids and not config.containers:
        config.pids = (work.pid,)
    runtime = ProbeRuntime(ProbeSet.open(), features)
    if ring_size is not None:
        runtime.ring_size = ring_size
    the_sink = sink if sink is not None else MemorySink()
    collector = Collector(plan, runtime, the_sink, config, resolver)
    collector.start()
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, kwargs={"should_stop": stop.is_set})
    thread.start()
    try:
        output = work.go()
        time.sleep(config.aggregation_ms / 1000 + 0.3)
    finally:
        stop.set()
        thread.join()
    hits = {}
    for symbol in hit_symbols:
        spec = next(s for s in plan.specs if s.symbol == symbol)
        hits[symbol] = runtime.node_hits(spec.object_name, spec.index)
    if before_stop is not None:
        before_stop(collector)
    collector.stop()
    return Run(collector, the_sink, plan, output, hits)


def image_rootfs_archive(root: Path, workload: Path) -> Path:
    """A container image's root filesystem as a tar (`podman import` makes the image; no
    registry here): its own copies of the workload (at the host's path) and of the libraries
    it loads, and an empty /stella-workload to bind-mount the host's workload on."""
    for directory in ("usr/lib/x86_64-linux-gnu", "lib64", "proc", "sys", "dev", "etc", "tmp"):
        (root / directory).mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "etc" / "os-release").write_text('NAME="stella scope test image"\n')
    (root / "stella-workload").write_bytes(b"")  # the mount point of the workload binary
    for source in (
        str(workload),
        LIBCRYPTO,
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
    ):
        target = root / source.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(source).resolve(), target)
    archive = root.parent / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname=".")
    return archive


# containerd's start here takes ~1 s; a loaded host (2 shared cores) several.
CONTAINERD_START_SECONDS = 30.0
# The CRI plugin is not needed (and would open a streaming server): ctr talks to the core API.
CONTAINERD_CONFIG = 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n'


class ContainerdUnavailable(Exception):
    """containerd is not installed or did not start (the message says which)."""


@dataclass(frozen=True)
class Containerd:
    """A containerd daemon of our own: its root directory and socket."""

    root: Path
    address: str

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", self.address, *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def import_rootfs(self, archive: Path, name: str, work: Path) -> tuple[str, str]:
        """A root filesystem tar as an image of this daemon (`podman import`, then `podman
        save` as an OCI archive for `ctr image import`): (reference, the digest containerd
        reports for it, not read through the store reader under test)."""
        reference = f"{name}:{secrets.token_hex(4)}"
        oci = work / "image.tar"
        subprocess.run(
            ["podman", "import", str(archive), reference], capture_output=True, check=True
        )
        try:
            subprocess.run(
                ["podman", "save", "--format", "oci-archive", "-o", str(oci), reference],
                capture_output=True,
                check=True,
            )
        finally:
            subprocess.run(["podman", "rmi", "-f", reference], capture_output=True, check=False)
        self.ctr("image", "import", str(oci))
        rows = self.ctr("image", "ls", f"name=={reference}").stdout.splitlines()[1:]
        assert len(rows) == 1, rows
        digest = rows[0].split()[2]
        assert digest.startswith("sha256:")
        return reference, digest


@contextlib.contextmanager
def containerd_daemon(base: Path) -> Iterator[Containerd]:
    """containerd on its own root, state directory and socket under `base` (systemd is not PID
    1 here and the package's service start is refused); its tasks, containers and the daemon
    stopped at the end. ContainerdUnavailable when it cannot run."""
    missing = [
        b for b in ("containerd", "ctr", "runc", "containerd-shim-runc-v2") if not shutil.which(b)
    ]
    if missing:
        raise ContainerdUnavailable(f"{', '.join(missing)} not installed (scripts/setup.sh)")
    base.mkdir(parents=True, exist_ok=True)
    (base / "config.toml").write_text(CONTAINERD_CONFIG)
    daemon = Containerd(base / "root", str(base / "c.sock"))
    log_path = base / "containerd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *("containerd", "--config", str(base / "config.toml")),
                *("--root", str(daemon.root), "--state", str(base / "state")),
                *("--address", daemon.address),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + CONTAINERD_START_SECONDS
            while daemon.ctr("version", check=False).returncode != 0:
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-800:]
                    raise ContainerdUnavailable(
                        f"containerd did not start (exit {process.poll()}): {tail}"
                    )
                time.sleep(0.2)
            yield daemon
        finally:
            # Tasks first (their shims outlive the daemon), then the daemon.
            for task in daemon.ctr("task", "ls", "-q", check=False).stdout.split():
                daemon.ctr("task", "rm", "-f", task, check=False)
            for container in daemon.ctr("containers", "ls", "-q", check=False).stdout.split():
                daemon.ctr("containers", "rm", container, check=False)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
