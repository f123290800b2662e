"""Shared parts of the fuzz targets: valid seeds built with the library, the allowed-error rule,
the memory bound and the per-run time budget.

Every target starts from VALID inputs made here (a real bundle, a real signed envelope, real
records, a real .ndjson.zst) and mutates them, so that most examples get past the first checks
and reach the deeper parsing code; a few examples are pure random bytes.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stella_bundle.errors import InputError, VerificationFailure

# The project's own error types for bad input (exit 2) and a verdict of "no" (exit 1). An
# InternalError (exit 3) or any foreign exception on hostile input is a finding.
ALLOWED: tuple[type[BaseException], ...] = (InputError, VerificationFailure)

# Memory one example may add at its peak (see bounded_memory).
MAX_EXAMPLE_MEMORY = 200 * 1024 * 1024

T0 = dt.datetime(2026, 11, 21, 5, 0, tzinfo=dt.UTC)
HEX64 = "0123456789abcdef" * 4

SBOM = {
    "bomFormat": "CycloneDX",
    "specVersion": "1.6",
    "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
    "version": 1,
    "metadata": {"component": {"type": "application", "name": "fuzz-workload", "bom-ref": "app"}},
    "components": [
        {
            "type": "library",
            "name": "libssl3",
            "version": "3.0.11-1~deb12u2",
            "purl": "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64",
            "bom-ref": "ssl",
        }
    ],
}


def call_allowing_own_errors(function: Callable[[], Any]) -> BaseException | None:
    """Run `function`; return the project error it raised, re-raise anything else."""
    try:
        function()
    except ALLOWED as exc:
        # One line, naming what was wrong: the CLI prints describe() as the error line.
        assert "\n" not in exc.describe(), repr(exc.describe())
        return exc
    return None


def _proc_status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False where Linux forbids it."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


@contextmanager
def bounded_memory(limit: int = MAX_EXAMPLE_MEMORY) -> Iterator[None]:
    """Assert that the block raises the process's memory by less than `limit` bytes at its peak.

    Measured as the peak RSS (VmHWM, reset before the block) over the RSS before it: this counts
    C allocations too (zlib, zstd, protobuf) and costs nothing per allocation. Where the peak
    cannot be reset, tracemalloc measures the Python heap instead (three times slower).
    """
    if _reset_peak_rss():
        before = _proc_status("VmRSS")
        yield
        grown = _proc_status("VmHWM") - before
    else:
        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        try:
            yield
        finally:
            grown = tracemalloc.get_traced_memory()[1] - base
            if started:
                tracemalloc.stop()
    assert grown < limit, f"example used {grown >> 20} MiB at its peak (limit {limit >> 20} MiB)"


def record(index: int = 0, **extra: Any) -> dict[str, Any]:
    """A valid observation record."""
    base: dict[str, Any] = {
        "node_hash": f"sha256:{HEX64}",
        "function_name": "SSL_write",
        "purl": "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64",
        "probe_type": "uprobe",
        "observed_at": (T0 + dt.timedelta(milliseconds=37 * index))
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z"),
        "pid": 4242,
        "comm": "workload",
    }
    base.update(extra)
    return base


def full_record() -> dict[str, Any]:
    """A valid record using every optional field (so mutations reach every field's check)."""
    return record(
        7,
        kind="net",
        count=3,
        first_observed_at="2026-11-21T04:59:00.000000Z",
        last_observed_at="2026-11-21T05:01:00.000000Z",
        binary_path="/usr/lib/x86_64-linux-gnu/libssl.so.3",
        build_id="0123abcd",
        container_id="c0ffee",
        pod_name="api-0",
        namespace="prod",
        host="node-a",
        image_digest=f"sha256:{HEX64}",
        details={"address": "10.0.0.1", "port": 443, "argv": ["a", "b"], "nested": {"k": [1]}},
    )


@dataclass(frozen=True)
class BundleSeed:
    bundle: Path
    trust_root: Path
    function_map: Path
    function_map_envelope: Path
    evidence: Path


def build_seed_bundle(directory: Path, keys: Any) -> BundleSeed:
    """A real bundle: a function map from an SBOM, one sealed evidence chain, built and signed."""
    from stella_bundle.attest.signing import sign_to_file
    from stella_bundle.bundle.build import build_bundle
    from stella_bundle.canonical import canonical_bytes
    from stella_bundle.evidence.config import WriterConfig
    from stella_bundle.evidence.writer import ChunkWriter
    from stella_bundle.formats.seal import CollectorInfo
    from stella_bundle.functionmap.generate import GenerateOptions, generate_function_map

    directory.mkdir(parents=True, exist_ok=True)
    sbom = directory / "app.cdx.json"
    sbom.write_text(json.dumps(SBOM))
    result = generate_function_map(
        GenerateOptions(sbom=sbom, service="fuzz", hot_functions=["SSL_*"])
    )
    function_map = directory / "fuzz-function-map.json"
    function_map.write_bytes(canonical_bytes(result.statement))
    envelope = directory / "fuzz-function-map.dsse.json"
    sign_to_file(result.statement, [keys.signer("function-map")], envelope)
    nodes = result.function_map.nodes()
    evidence = directory / "evidence"
    writer = ChunkWriter.open(
        evidence,
        "host-a",
        keys.signer("collector"),
        WriterConfig(max_records=20),
        CollectorInfo("fuzz-collector", "host-a", None, "test", None),
    )
    for index in range(45):
        node = nodes[index % len(nodes)]
        writer.append(
            record(index, node_hash=node.node_hash, function_name=node.symbol, purl=node.purl)
        )
    writer.close()
    bundle = directory / "fuzz.stella.bundle.tgz"
    previous = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = "1763700000"
    try:
        build_bundle(
            function_maps=[function_map],
            evidence=[evidence],
            signer=keys.signer("builder"),
            output=bundle,
        )
    finally:
        if previous is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = previous
    return BundleSeed(bundle, keys.trust_root, function_map, envelope, evidence)


def fuzz_settings(scale: float = 1.0, **overrides: Any) -> Any:
    """The settings of one fuzz target: the selected profile (see tests/conftest.py), with its
    example count scaled by `scale` (targets differ in cost per example)."""
    from hypothesis import settings

    default = "fuzz-ci" if os.environ.get("CI") else "fuzz-dev"
    profile = settings.get_profile(os.environ.get("STELLA_FUZZ_PROFILE", default))
    examples = max(1, int(profile.max_examples * scale))
    return settings(profile, max_examples=examples, **overrides)


# Seeds are built once per process by these cached functions, not pytest fixtures: hypothesis
# prints every argument of a falsifying example, and a fixture holding a whole archive would
# drown the one line that matters.
_SCRATCH = tempfile.TemporaryDirectory(prefix="stella-fuzz-")


@dataclass(frozen=True)
class SeedKeys:
    """One ed25519 key per role and a trust root over them (as tests/conftest.py's test_keys)."""

    directory: Path
    trust_root: Path

    def signer(self, role: str) -> Any:
        from stella_bundle.attest.keys import load_signer

        return load_signer(self.directory / f"{role}.key")


@functools.cache
def seed_keys() -> SeedKeys:
    from stella_bundle.attest.keys import generate_key
    from stella_bundle.formats.roles import ROLES
    from stella_bundle.formats.trust_root import TrustRoot

    directory = Path(_SCRATCH.name) / "keys"
    directory.mkdir()
    root = TrustRoot(expires=dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
    for role in ROLES:
        root.add_key(generate_key("ed25519", directory / role, None).public_key, [role])
    root.save(directory / "trust-root.json")
    return SeedKeys(directory, directory / "trust-root.json")


@functools.cache
def seed_bundle() -> BundleSeed:
    return build_seed_bundle(Path(_SCRATCH.name) / "bundle", seed_keys())


def scratch_dir(name: str) -> Path:
    """A directory of the fuzz run's scratch space (removed when the process ends)."""
    path = Path(_SCRATCH.name) / name
    path.mkdir(exist_ok=True)
    return path
