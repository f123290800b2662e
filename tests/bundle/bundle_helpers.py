"""Helpers of the bundle tests: real inputs (function map, evidence chain) and archive surgery."""

from __future__ import annotations

import datetime as dt
import io
import shutil
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.attest.dsse import sign_payload
from stella_bundle.attest.signing import sign_to_file
from stella_bundle.attest.statement import BUNDLE_MANIFEST_PREDICATE
from stella_bundle.canonical import canonical_bytes
from stella_bundle.evidence.config import WriterConfig
from stella_bundle.evidence.writer import ChunkWriter
from stella_bundle.formats.seal import CollectorInfo
from stella_bundle.functionmap.generate import GenerateOptions, generate_function_map
from stella_bundle.timeutil import format_timestamp

SOURCE_DATE_EPOCH = "1763700000"
T0 = dt.datetime(2026, 11, 21, 5, 0, tzinfo=dt.UTC)

SBOM = {
    "bomFormat": "CycloneDX",
    "specVersion": "1.6",
    "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
    "version": 1,
    "metadata": {"component": {"type": "application", "name": "demo-workload", "bom-ref": "app"}},
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


@dataclass
class BundleInputs:
    directory: Path
    function_map: Path  # FM.json (the Statement)
    function_map_envelope: Path
    evidence: Path
    statement: dict[str, Any]
    nodes: list[Any]
    records: list[dict[str, Any]]


def write_chain(
    evidence: Path,
    chain_id: str,
    signer: Any,
    records: Iterable[dict[str, Any]],
    max_records: int = 40,
) -> None:
    writer = ChunkWriter.open(
        evidence,
        chain_id,
        signer,
        WriterConfig(max_records=max_records),
        CollectorInfo("test-collector", "host-a", None, "test", None),
    )
    for record in records:
        writer.append(dict(record))
    writer.close()


def records_for(nodes: list[Any], count: int, start: dt.datetime = T0) -> list[dict[str, Any]]:
    return [
        {
            "node_hash": nodes[i % len(nodes)].node_hash,
            "function_name": nodes[i % len(nodes)].symbol,
            "purl": nodes[i % len(nodes)].purl,
            "probe_type": "uprobe",
            "observed_at": format_timestamp(start + dt.timedelta(milliseconds=37 * i)),
            "pid": 4242,
            "comm": "workload",
        }
        for i in range(count)
    ]


def make_inputs(directory: Path, keys: Any, *, fm_role: str = "function-map") -> BundleInputs:
    import json

    directory.mkdir(parents=True, exist_ok=True)
    sbom = directory / "app.cdx.json"
    sbom.write_text(json.dumps(SBOM))
    result = generate_function_map(
        GenerateOptions(sbom=sbom, service="demo", hot_functions=["SSL_*"])
    )
    statement = result.statement
    fm = directory / "demo-function-map.json"
    fm.write_bytes(canonical_bytes(statement))
    envelope = directory / "demo-function-map.dsse.json"
    sign_to_file(statement, [keys.signer(fm_role)], envelope)
    nodes = result.function_map.nodes()
    records = records_for(nodes, 200)
    evidence = directory / "evidence"
    write_chain(evidence, "host-a", keys.signer("collector"), records)
    return BundleInputs(directory, fm, envelope, evidence, statement, nodes, records)


def chains_inputs(
    directory: Path, keys: Any, chunk_records: dict[str, int], count: int = 3000
) -> BundleInputs:
    """`make_inputs` with its evidence replaced: `count` records dealt in turn to the chains
    named in `chunk_records`, each rotating after that many records."""
    inputs = make_inputs(directory, keys)
    shutil.rmtree(inputs.evidence)
    records = records_for(inputs.nodes, count)
    for index, (chain_id, per_chunk) in enumerate(chunk_records.items()):
        chain_records = records[index :: len(chunk_records)]
        write_chain(inputs.evidence, chain_id, keys.signer("collector"), chain_records, per_chunk)
    return inputs


def chains_bundle_members(
    directory: Path, keys: Any, chunk_records: dict[str, int], count: int = 3000
) -> list[tuple[str, bytes]]:
    """The members of a bundle of `chains_inputs` (one chain: a chain-order view)."""
    from stella_bundle.bundle.build import build_bundle

    inputs = chains_inputs(directory / "in", keys, chunk_records, count)
    bundle = build_bundle(
        function_maps=[inputs.function_map],
        evidence=[inputs.evidence],
        signer=keys.signer("builder"),
        output=directory / "chains.stella.bundle.tgz",
    ).output
    return read_members(bundle)


# --- archive surgery ---------------------------------------------------------------------------


def read_members(bundle: Path) -> list[tuple[str, bytes]]:
    from stella_bundle.bundle.reader import SafeTarReader

    with SafeTarReader.open(bundle) as reader:
        return [(member.name, stream.read_all(1 << 30)) for member, stream in reader]


def write_members(path: Path, members: list[tuple[str, bytes]]) -> Path:
    from stella_bundle.bundle.tarwriter import ReproducibleTarWriter

    with open(path, "wb") as out, ReproducibleTarWriter(out, 0) as writer:
        for name, data in members:
            writer.add_bytes(name, data)
    return path


def resign_manifest(members: list[tuple[str, bytes]], signer: Any) -> list[tuple[str, bytes]]:
    """Re-list every member in a fresh manifest (as a builder with that key would)."""
    import hashlib
    import json

    old = json.loads(dict(members)["manifest.json"])
    body = [(n, d) for n, d in members if n not in ("manifest.json", "manifest.dsse.json")]
    files = [
        {"path": n, "sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
        for n, d in sorted(body)
    ]
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": f["path"], "digest": {"sha256": f["sha256"]}} for f in files],
        "predicateType": BUNDLE_MANIFEST_PREDICATE,
        "predicate": {**old["predicate"], "files": files},
    }
    payload = canonical_bytes(statement)
    envelope = sign_payload(payload, "application/vnd.in-toto+json", [signer])
    return [
        ("manifest.json", payload),
        ("manifest.dsse.json", canonical_bytes(envelope.to_dict())),
        *body,
    ]


def hostile_tar(base: list[tuple[str, bytes]], extra: Callable[[tarfile.TarFile], None]) -> bytes:
    """A gzip tar of `base` members (regular files) followed by what `extra` adds."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in base:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        extra(tar)
    return buffer.getvalue()


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def build_reproducible(function_map: Path, evidence: Path, signer: Any, output: Path) -> Path:
    """`build_bundle` with SOURCE_DATE_EPOCH pinned (and the environment restored after), so
    two builds of the same inputs give the same bytes."""
    from stella_bundle.bundle.build import build_bundle

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        build_bundle(
            function_maps=[function_map], evidence=[evidence], signer=signer, output=output
        )
    return output


def zstd_lines(data: bytes) -> list[bytes]:
    """The lines of a zstd-compressed chunk, without their newlines."""
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj().decompress(data).splitlines()


def zstd_of_lines(lines: list[bytes]) -> bytes:
    """A chunk of `lines`, each ended by a newline, zstd-compressed."""
    import zstandard

    return zstandard.ZstdCompressor().compress(b"".join(line + b"\n" for line in lines))


def view_edit(
    edit: Callable[[list[bytes]], list[bytes]],
) -> Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]:
    """The members with the observations view's lines edited (each ended by a newline)."""

    def apply(members: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        return [
            (n, b"".join(line + b"\n" for line in edit(d.splitlines())))
            if n.startswith("observations/")
            else (n, d)
            for n, d in members
        ]

    return apply


def verify_report(
    bundle: Path, trust_root: Path, *, workers: bool, by_spans: bool = True
) -> tuple[str, Any]:
    """("report", the verification Statement without its time) or ("refused", the archive
    error or malformed content's): what two ways of verifying must agree on. `workers`: every chunk and view block in
    two worker processes; `by_spans`: a chain-order view by its spans (`VerifyLimits`)."""
    import json

    from stella_bundle.errors import InputError
    from stella_bundle.formats.trust_root import TrustRoot
    from stella_bundle.verify import VerifyLimits, verify_bundle
    from stella_bundle.verify.chunkwork import WorkLimits

    work = WorkLimits(parallel_min_bytes=0, workers=2) if workers else WorkLimits(workers=1)
    limits = VerifyLimits(work=work, view_by_spans=by_spans)
    try:
        outcome = verify_bundle(bundle, TrustRoot.load(trust_root), limits=limits)
    except InputError as exc:
        return "refused", exc.describe()
    statement = json.loads(json.dumps(outcome.statement))
    del statement["predicate"]["time_verified"]
    return "report", statement
