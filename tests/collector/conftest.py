"""Collector fixtures: eBPF readiness, the workload built with gcc, a collection run."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from collector_support import BLOCKING_SOURCE, WORKLOAD_SOURCE, Run, collect, ebpf_ready

from stella_bundle.collector.features import KernelFeatures, detect


@pytest.fixture(scope="session")
def ebpf() -> None:
    reason = ebpf_ready()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def workload_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the workload")
    out = tmp_path_factory.mktemp("workload") / "stella-workload"
    subprocess.run(
        ["gcc", "-O2", "-g", "-o", str(out), str(WORKLOAD_SOURCE), "-lcrypto"], check=True
    )
    return out


@pytest.fixture(scope="session")
def blocking_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the workload")
    out = tmp_path_factory.mktemp("blocking") / "stella-blocking"
    subprocess.run(["gcc", "-O2", "-g", "-o", str(out), str(BLOCKING_SOURCE)], check=True)
    return out


@pytest.fixture(scope="session")
def features() -> KernelFeatures:
    return detect()


@pytest.fixture
def collect_run(
    ebpf: None, workload_bin: Path, features: KernelFeatures
) -> Iterator[Callable[..., Run]]:
    def run(*args: str, **kwargs: Any) -> Run:
        return collect(workload_bin, features, *args, **kwargs)

    yield run
