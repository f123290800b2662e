"""Helpers for function-map tests: the real dep-scan SBOM, an SBOM of this machine's Debian
packages (dpkg), and writing observation records."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from stella_bundle.canonical import canonical_bytes
from stella_bundle.formats.function_map import FunctionMap
from stella_bundle.functionmap.generate import GenerateOptions, generate_function_map

REPO = Path(__file__).resolve().parents[2]
JAVA_SBOM = REPO / "tests" / "data" / "external" / "cyclonedx" / "dep-scan-bom-evinse-java.json"
DEBIAN_PACKAGES = ("openssl", "libssl3", "libc6")
LIBSSL = Path("/usr/lib/x86_64-linux-gnu/libssl.so.3")
LIBCRYPTO = Path("/usr/lib/x86_64-linux-gnu/libcrypto.so.3")
LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")
EPOCH = "1769126400"  # 2026-01-23T00:00:00Z


def dpkg_components(packages: Iterable[str] = DEBIAN_PACKAGES) -> list[dict[str, Any]]:
    """CycloneDX components for installed Debian packages, read from dpkg."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${Architecture}\n", *packages],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    components = []
    for line in out.splitlines():
        name, version, arch = line.split("\t")
        purl = f"pkg:deb/debian/{name}@{version}?arch={arch}&distro=debian-12"
        components.append(
            {"type": "library", "name": name, "version": version, "purl": purl, "bom-ref": purl}
        )
    return components


def write_debian_sbom(path: Path) -> Path:
    """A real CycloneDX 1.5 SBOM of openssl, libssl3 and libc6 as installed here."""
    document = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {"component": {"type": "application", "name": "tls-client"}},
        "components": dpkg_components(),
    }
    path.write_text(json.dumps(document, indent=2))
    return path


def component_purl(sbom: Path, name: str) -> str:
    from stella_bundle.functionmap.sbom import load_sbom

    for component in load_sbom(sbom).components:
        if component.name == name:
            return component.purl
    raise AssertionError(f"{name} not in {sbom}")


def make_map(sbom: Path, **kwargs: Any) -> FunctionMap:
    return generate_function_map(GenerateOptions(sbom=sbom, service="svc", **kwargs)).function_map


def record(
    node_hash: str,
    function_name: str = "f",
    *,
    observed_at: str = "2026-01-23T00:10:00.000000Z",
    probe_type: str | None = "uprobe",
    **extra: Any,
) -> dict[str, Any]:
    value: dict[str, Any] = {
        "node_hash": node_hash,
        "function_name": function_name,
        "observed_at": observed_at,
        **extra,
    }
    if probe_type is not None:
        value["probe_type"] = probe_type
    return value


def write_ndjson(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(canonical_bytes(r) + b"\n" for r in records))
    return path


def records_for(
    function_map: FunctionMap, skip: Callable[[Any], bool] = lambda p: False
) -> list[dict[str, Any]]:
    """One uprobe record for every node of every path not skipped."""
    out = []
    for path in function_map.expected_paths:
        if skip(path):
            continue
        for node in path.nodes:
            out.append(record(node.node_hash, node.symbol, purl=node.purl))
    return out


def write_chain(evidence: Path, chain_id: str, records: list[dict[str, Any]], signer: Any) -> Path:
    """A real sealed evidence chain, written by the evidence writer (two records per chunk)."""
    from stella_bundle.evidence.config import WriterConfig
    from stella_bundle.evidence.writer import ChunkWriter
    from stella_bundle.formats.seal import CollectorInfo

    collector = CollectorInfo("test-collector", "host1", None, "0.1.0", None)
    with ChunkWriter.open(
        evidence, chain_id, signer, WriterConfig(max_records=2), collector
    ) as writer:
        for item in records:
            writer.append(dict(item))
    return evidence / chain_id
