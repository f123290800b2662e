"""Shared test fixtures: offline guarantees, CLI runners, CI rules for eBPF tests."""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from stella_bundle.cli import main as cli_main

REPO_ROOT = Path(__file__).resolve().parent.parent
EXTERNAL = REPO_ROOT / "tests" / "data" / "external"
FIXTURES = REPO_ROOT / "fixtures"
IN_CI = bool(os.environ.get("CI"))


# --- CI: eBPF tests must run, never skip ---------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if IN_CI and report.skipped and item.get_closest_marker("ebpf") is not None:
        report.outcome = "failed"
        report.longrepr = f"eBPF test skipped in CI (CI=true requires it to run): {report.longrepr}"


# --- hypothesis profiles (every property test) ----------------------------------------------
# "ci" under CI=true: the example counts written in the tests (`scaled_examples(n)` gives n, a test
# without a count gets 100). "dev" otherwise: a fifth of each (at least 10), so that a local run
# stays short while CI explores as much as before. STELLA_HYPOTHESIS_PROFILE picks one; "long"
# (ten times the CI counts) is for a run by hand. The fuzz targets have profiles of their own.
_CI_EXAMPLES = 100
settings.register_profile("ci", max_examples=_CI_EXAMPLES)
settings.register_profile("dev", max_examples=_CI_EXAMPLES // 5)
settings.register_profile("long", max_examples=_CI_EXAMPLES * 10)
settings.load_profile(os.environ.get("STELLA_HYPOTHESIS_PROFILE", "ci" if IN_CI else "dev"))


def scaled_examples(ci_count: int) -> int:
    """The example count of a property test: `ci_count` under the "ci" profile, scaled like the
    profile's default (100) for the others, never below 10."""
    return max(10, ci_count * settings().max_examples // _CI_EXAMPLES)


# --- time bounds that hold on a loaded machine ---------------------------------------------


def cpu_seconds() -> float:
    """CPU seconds of this process and of its children reaped so far. A bound on work (a bomb
    refused, not inflated) in these units holds on a loaded machine, where wall-clock seconds
    stretch with the load (the other xdist worker, the other users of the cores)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# --- fuzz profiles (tests/fuzz) ------------------------------------------------------------
# Registered here, applied only by the fuzz targets (tests/fuzz/fuzz_support.fuzz_settings), so the
# other property tests keep their own settings. STELLA_FUZZ_PROFILE picks one; the default is
# "fuzz-ci" under CI=true (the whole fuzz run within 60 s on 2 cores), else "fuzz-dev".
# "fuzz-long" is for a run by hand (STELLA_FUZZ_PROFILE=fuzz-long): many more examples, no deadline.
_FUZZ_COMMON = settings(
    # ms of wall time per example: a hang fails, not a loaded machine. The slowest examples
    # take ~0.15 s here (a bomb inflates 64 MiB before it is refused); a process given 4% of
    # a core at load 50 needs 25 times that.
    deadline=30_000,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
    print_blob=True,
)
settings.register_profile("fuzz-ci", _FUZZ_COMMON, max_examples=200)
settings.register_profile("fuzz-dev", _FUZZ_COMMON, max_examples=50)
settings.register_profile("fuzz-long", _FUZZ_COMMON, max_examples=20_000, deadline=None)


# --- offline guarantee ----------------------------------------------------------------------


class NetworkUsed(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Any attempt to create an internet socket or resolve a name fails the test."""
    attempts: list[str] = []
    real_socket = socket.socket

    class GuardedSocket(real_socket):  # type: ignore[misc, valid-type]
        def __init__(self, family: int = -1, *args: object, **kwargs: object) -> None:
            if family in (socket.AF_INET, socket.AF_INET6, -1):
                attempts.append(f"socket(family={family})")
                raise NetworkUsed(f"network socket opened during an offline operation: {family}")
            super().__init__(family, *args, **kwargs)  # type: ignore[arg-type]

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(f"lookup{args[:1]}")
        raise NetworkUsed(f"name lookup during an offline operation: {args[:1]}")

    monkeypatch.setattr(socket, "socket", GuardedSocket)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "gethostbyname", refuse)
    yield attempts
    assert not attempts, f"offline operation used the network: {attempts}"


# --- running the CLI --------------------------------------------------------------------------


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture(params=["inline", "workers"])
def chunk_workers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every `bundle verify` of the test twice: chunks and view blocks scanned in the pass
    itself, then in worker processes (forced for any archive size); verdicts must agree."""
    from stella_bundle.verify import chunkwork

    if request.param == "workers":
        if len(os.sched_getaffinity(0)) < 2:
            pytest.skip("one CPU: verification never starts workers here")
        monkeypatch.setattr(chunkwork, "PARALLEL_MIN_BYTES", 0)
    else:
        monkeypatch.setattr(chunkwork, "PARALLEL_MIN_BYTES", 1 << 62)
    return str(request.param)


@pytest.fixture
def run_cli(capfd: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run `stella ARGS` in-process; returns exit code and captured output."""

    def run(*args: str | os.PathLike[str]) -> CliResult:
        capfd.readouterr()
        code = cli_main([str(a) for a in args])
        out, err = capfd.readouterr()
        return CliResult(code, out, err)

    return run


def unshare_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return probe.returncode == 0


def run_in_empty_netns(*args: str | os.PathLike[str], cwd: Path | None = None) -> CliResult:
    """Run `stella ARGS` as a subprocess in a network namespace with no interfaces."""
    command = ["unshare", "-n", sys.executable, "-m", "stella_bundle", *[str(a) for a in args]]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=600)
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


@pytest.fixture
def netns_cli() -> Callable[..., CliResult]:
    if not unshare_available():
        if IN_CI:
            pytest.fail("unshare -n is unavailable; CI must prove the verifier runs offline")
        pytest.skip("unshare -n unavailable (needs root)")
    return run_in_empty_netns


# --- keys and a trust root for every role ------------------------------------------------------


@dataclass
class TestKeys:
    """One ed25519 key per role (plus an untrusted `stranger`), and a trust root over them."""

    directory: Path
    trust_root: Path

    def private(self, role: str) -> Path:
        return self.directory / f"{role}.key"

    def public(self, role: str) -> Path:
        return self.directory / f"{role}.pub.json"

    def signer(self, role: str):  # type: ignore[no-untyped-def]
        from stella_bundle.attest.keys import load_signer

        return load_signer(self.private(role))


@pytest.fixture(scope="session")
def test_keys(tmp_path_factory: pytest.TempPathFactory) -> TestKeys:
    import datetime as dt

    from stella_bundle.attest.keys import generate_key
    from stella_bundle.formats.roles import ROLES
    from stella_bundle.formats.trust_root import TrustRoot

    directory = tmp_path_factory.mktemp("keys")
    root = TrustRoot(expires=dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
    for role in ROLES:
        generated = generate_key("ed25519", directory / role, None)
        root.add_key(generated.public_key, [role])
    generate_key("ed25519", directory / "stranger", None)
    root.save(directory / "trust-root.json")
    return TestKeys(directory, directory / "trust-root.json")


# --- shared by tests/functionmap and tests/coverage ------------------------------------------


@pytest.fixture
def debian_sbom(tmp_path: Path) -> Path:
    """A real CycloneDX SBOM of this machine's openssl, libssl3 and libc6 (dpkg)."""
    from tests.functionmap.functionmap_helpers import write_debian_sbom

    return write_debian_sbom(tmp_path / "debian.cdx.json")


# --- shared by tests/bundle and tests/verify: a real map, a real chain, a built bundle -------


@pytest.fixture(scope="session")
def bundle_inputs(tmp_path_factory: pytest.TempPathFactory, test_keys: TestKeys) -> Any:
    from tests.bundle.bundle_helpers import make_inputs

    return make_inputs(tmp_path_factory.mktemp("bundle-inputs"), test_keys)


@pytest.fixture(scope="session")
def built_bundle(
    tmp_path_factory: pytest.TempPathFactory, bundle_inputs: Any, test_keys: TestKeys
) -> Path:
    from tests.bundle.bundle_helpers import build_reproducible

    output = tmp_path_factory.mktemp("built") / "demo.stella.bundle.tgz"
    build_reproducible(
        bundle_inputs.function_map, bundle_inputs.evidence, test_keys.signer("builder"), output
    )
    return output


@pytest.fixture
def copy_inputs(tmp_path: Path, bundle_inputs: Any) -> Callable[[], Path]:
    def copy() -> Path:
        target = tmp_path / "inputs"
        shutil.copytree(bundle_inputs.directory, target)
        return target

    return copy


# --- Order of files: the longest first (`just test`: xdist with --dist loadfile) ---------------
# xdist hands each worker whole files; by default the files with the most tests first, which
# put the long files of few tests (a fresh clone's `just demo`, agent kills, real servers) last,
# where one worker ran them alone while the other had finished. The recipe passes
# --no-loadscope-reorder, and files go out longest first by the seconds measured in a full run
# (tests/file_seconds.json, files of a second or more; the others after them, in collection
# order). `STELLA_RECORD_FILE_SECONDS=tests/file_seconds.json just test` measures them again.

FILE_SECONDS = Path(__file__).with_name("file_seconds.json")
_RECORDED: dict[str, float] = {}


def _file(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    seconds: dict[str, float] = {}
    if FILE_SECONDS.exists():
        seconds = json.loads(FILE_SECONDS.read_text())
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        first.setdefault(_file(item.nodeid), index)
    # Stable: a file's tests keep their order and stay together.
    items.sort(key=lambda item: (-seconds.get(_file(item.nodeid), 0.0), first[_file(item.nodeid)]))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if os.environ.get("STELLA_RECORD_FILE_SECONDS"):
        path = _file(report.nodeid)
        _RECORDED[path] = _RECORDED.get(path, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get("STELLA_RECORD_FILE_SECONDS")
    if target and _RECORDED and not hasattr(session.config, "workerinput"):  # xdist's controller
        # Files of a second or more: the many short ones only fill the end, in any order.
        longest = sorted(
            ((k, round(v)) for k, v in _RECORDED.items() if v >= 1), key=lambda kv: -kv[1]
        )
        ordered = dict(longest)
        Path(target).write_text(json.dumps(ordered, indent=1) + "\n")
