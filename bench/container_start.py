"""Container start → in scope → probes inside attached: latency over N podman (or containerd) starts.

The start is the kernel's cgroup_mkdir of the container's cgroup (tp_btf event time, the
collector's own clock); "in scope" is when the collector wrote the cgroup id into the kernel's
scope map; "settled" is when a process of the container ran in its own root and the probes on
the container's own binaries were attached. Target (issue 13): p99 <= 250 ms.

    python3 bench/container_start.py [--starts 20] [--runtime podman|containerd]

Needs root, BTF, podman and runc (scripts/setup.sh). The image is imported from a local root
filesystem holding a copy of libcrypto and the libraries it needs. With `--runtime containerd`
a containerd daemon of its own runs the same image (`ctr run`; the container's id is its name),
named from containerd's metadata store.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stella_bundle.collector.containers import CgroupResolver  # noqa: E402
from stella_bundle.collector.features import detect  # noqa: E402
from stella_bundle.collector.loader import ProbeRuntime, ProbeSet  # noqa: E402
from stella_bundle.collector.plan import build_plan  # noqa: E402
from stella_bundle.collector.runtime_containerd import ContainerdMetadata  # noqa: E402
from stella_bundle.collector.runtimes import RuntimeMetadata  # noqa: E402
from stella_bundle.collector.session import Collector, CollectorConfig, MemorySink  # noqa: E402
from stella_bundle.formats.function_map import ExpectedNode  # noqa: E402
from stella_bundle.formats.scope import Scope  # noqa: E402

# The tests' containerd daemon and image import: one definition for both.
sys.path.insert(0, str(REPO / "tests" / "collector"))
from collector_support import Containerd, containerd_daemon  # noqa: E402

LIBCRYPTO = "/usr/lib/x86_64-linux-gnu/libcrypto.so.3"
FILES = (LIBCRYPTO, "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2")
RUN = ("podman", "run", "--rm", "--runtime", "runc", "--cgroup-manager", "cgroupfs")
LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "none")


def build_image(work: Path) -> str:
    root = work / "rootfs"
    for source in (*FILES, "/bin/sleep"):
        target = root / source.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(source).resolve(), target)
    # The image's libcrypto is another file than the host's (4 KiB appended, same symbols):
    # no ELF index is shared with the host's, so the first container pays for indexing it and
    # the next ones find it indexed (the same build id and size).
    with (root / LIBCRYPTO.lstrip("/")).open("ab") as handle:
        handle.write(b"\0" * 4096)
    for directory in ("proc", "sys", "dev", "etc"):
        (root / directory).mkdir(exist_ok=True)
    archive = work / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname=".")
    reference = f"localhost/stella-bench-start:{secrets.token_hex(4)}"
    subprocess.run(["podman", "import", str(archive), reference], check=True, capture_output=True)
    return reference


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def start_command(daemon: Containerd | None, reference: str, name: str) -> list[str]:
    """A container of the image sleeping long enough to be settled, by podman or by ctr."""
    if daemon is None:
        return [*RUN, *LIMITS, "--name", name, reference, "/bin/sleep", "0.3"]
    return ["ctr", "--address", daemon.address, "run", "--rm", reference, name, "/bin/sleep", "0.3"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--runtime", choices=("podman", "containerd"), default="podman")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.runtime == "podman":
            measure(args.starts, Path(tmp), None)
        else:
            with containerd_daemon(Path(tmp) / "containerd") as daemon:
                measure(args.starts, Path(tmp), daemon)


def measure(starts: int, work: Path, daemon: Containerd | None) -> None:
    features = detect()
    podman_reference = reference = build_image(work)
    resolver = None
    try:
        if daemon is not None:
            # The same root filesystem (build_image's archive) as an image of the daemon.
            name = "localhost/stella-bench-start-containerd"
            reference, _ = daemon.import_rootfs(work / "rootfs.tar", name, work)
            store = ContainerdMetadata(daemon.root)
            resolver = CgroupResolver(runtime=RuntimeMetadata(containerd=store))
        prefix = f"stella-bench-{secrets.token_hex(3)}"
        node = ExpectedNode.create("pkg:deb/debian/libssl3", "EVP_Digest", binary_path=LIBCRYPTO)
        config = CollectorConfig(
            mode="coverage", aggregation_ms=60_000, scope=Scope(container_name=f"{prefix}-*")
        )
        collector = Collector(
            build_plan([node], features),
            ProbeRuntime(ProbeSet.open(), features),
            MemorySink(),
            config,
            resolver,
        )
        collector.start()
        stop = threading.Event()
        thread = threading.Thread(target=collector.run, kwargs={"should_stop": stop.is_set})
        thread.start()
        try:
            for index in range(starts):
                command = start_command(daemon, reference, f"{prefix}-{index}")
                subprocess.run(command, check=True, capture_output=True)
        finally:
            time.sleep(0.5)
            stop.set()
            thread.join()
            collector.stop()
    finally:
        subprocess.run(["podman", "rmi", "-f", podman_reference], capture_output=True)
    report(starts, collector)


def report(starts: int, collector: Collector) -> None:
    in_scope = [v["in_scope"] / 1e6 for v in collector.container_latency_ns.values()]
    settled = [
        v["settled"] / 1e6 for v in collector.container_latency_ns.values() if "settled" in v
    ]
    print(f"containers started: {starts}, seen in scope: {len(in_scope)}, settled: {len(settled)}")
    for label, values in (
        ("cgroup_mkdir → in scope", in_scope),
        ("cgroup_mkdir → settled", settled),
    ):
        if values:
            print(
                f"{label}: p50 {statistics.median(values):.1f} ms, "
                f"p99 {percentile(values, 0.99):.1f} ms, max {max(values):.1f} ms "
                "(target p99 <= 250 ms)"
            )


if __name__ == "__main__":
    main()
