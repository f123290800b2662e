"""Inputs of the report tests: a function map, observation files and a sealed chain, with a
missing path, an unexpected symbol and a tag below its minimum, so every part of each result
is filled (a unique module name: every test folder has a conftest)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stella_bundle.attest.statement import FUNCTION_MAP_PREDICATE, make_statement
from stella_bundle.canonical import canonical_bytes
from stella_bundle.evidence.config import WriterConfig
from stella_bundle.evidence.writer import ChunkWriter
from stella_bundle.formats.function_map import (
    Coverage,
    ExpectedNode,
    ExpectedPath,
    FunctionMap,
    SbomRef,
    priority_of,
)
from stella_bundle.formats.seal import CollectorInfo

PURL = "pkg:generic/report-test@1.0"
TAGS = ("crypto", "auth", "net")
PROBES = ("uprobe", "kprobe", "tracepoint")
PATHS = 12


def node_hash(index: int) -> str:
    return "sha256:" + hashlib.sha256(f"{PURL}#fn_{index}".encode()).hexdigest()


def function_map() -> dict[str, Any]:
    expected = [
        ExpectedPath(
            f"report/{index:03d}",
            TAGS[index % len(TAGS)],
            priority_of(TAGS[index % len(TAGS)]),
            index == PATHS - 1,
            (ExpectedNode(PURL, f"fn_{index}", node_hash(index)),),
        )
        for index in range(PATHS)
    ]
    fmap = FunctionMap(
        service="report-svc",
        build_id="report-build",
        generated_at="2026-01-23T00:00:00.000000Z",
        sbom=SbomRef("sha256:" + "0" * 64, "CycloneDX", "1.6"),
        coverage=Coverage(
            min_observation_rate=0.8, fail_on_unexpected=False, tag_min_rates={"crypto": 1.0}
        ),
        hot_functions=(),
        expected_paths=tuple(expected),
    )
    subject = [{"name": "report.cdx.json", "digest": {"sha256": "0" * 64}}]
    return make_statement(subject, FUNCTION_MAP_PREDICATE, fmap.to_dict())


def records() -> list[dict[str, Any]]:
    """Every path but fn_0 and fn_3 (both crypto) observed, plus one stray symbol."""
    out = []
    for index in range(PATHS):
        if index in (0, 3):
            continue
        for repeat in range(index % 3 + 1):
            out.append(
                {
                    "node_hash": node_hash(index),
                    "function_name": f"fn_{index}",
                    "purl": PURL,
                    "probe_type": PROBES[(index + repeat) % len(PROBES)],
                    "observed_at": f"2026-01-23T10:{index:02d}:{repeat * 7:02d}.000000Z",
                    "container_id": f"{index % 2:064d}",
                    "comm": "report-svc",
                    "pid": 100 + index,
                }
            )
    out.append(
        {
            "node_hash": node_hash(999),
            "function_name": "stray_[bold]x",
            "purl": PURL,
            "probe_type": "uprobe",
            "observed_at": "2026-01-23T10:30:00.000000Z",
        }
    )
    return out


@dataclass(frozen=True)
class Inputs:
    function_map: Path
    observations: Path
    evidence: Path


def write_inputs(directory: Path, collector_signer: Any) -> Inputs:
    map_path = directory / "function-map.json"
    map_path.write_bytes(canonical_bytes(function_map()))
    observations = directory / "obs.ndjson"
    observations.write_bytes(b"".join(canonical_bytes(r) + b"\n" for r in records()))
    evidence = directory / "evidence"
    info = CollectorInfo("report-test", "host-1", None, "0.1.0", None)
    with ChunkWriter.open(
        evidence, "chain-a", collector_signer, WriterConfig(max_records=8), info
    ) as writer:
        for item in records():
            writer.append(dict(item))
    return Inputs(map_path, observations, evidence)


def parse(stdout: str) -> Any:
    return json.loads(stdout)


def write_sbom(directory: Path) -> Path:
    """A CycloneDX SBOM of two packages the built-in catalog knows (no binaries checked)."""
    components = [
        {"type": "library", "name": name, "version": version, "purl": purl, "bom-ref": purl}
        for name, version in (("openssl", "3.0.15-1"), ("libssl3", "3.0.15-1"))
        for purl in (f"pkg:deb/debian/{name}@{version}?arch=amd64&distro=debian-12",)
    ]
    document = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {"component": {"type": "application", "name": "report-svc"}},
        "components": components,
    }
    path = directory / "sbom.cdx.json"
    path.write_text(json.dumps(document))
    return path


def write_bundle(inputs: Inputs, map_signer: Any, builder: Any) -> Path:
    """A bundle of the inputs' map (signed beside it) and chain."""
    from stella_bundle.attest.dsse import envelope_bytes, sign_statement
    from stella_bundle.bundle.build import build_bundle

    output = inputs.function_map.parent / "report.stella.bundle.tgz"
    if not output.exists():
        envelope = sign_statement(function_map(), [map_signer])
        (inputs.function_map.parent / "function-map.dsse.json").write_bytes(
            envelope_bytes(envelope)
        )
        build_bundle(
            function_maps=[inputs.function_map],
            evidence=[inputs.evidence],
            signer=builder,
            output=output,
        )
    return output


def page_text(page: str) -> str:
    """The text a reader of an HTML page sees (tags dropped, entities decoded, <style> left
    out), for finding the table's figures in it."""
    from html.parser import HTMLParser

    class _Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.parts: list[str] = []
            self.skip = 0

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            self.skip += tag in ("style", "title")

        def handle_endtag(self, tag: str) -> None:
            self.skip -= tag in ("style", "title")

        def handle_data(self, data: str) -> None:
            if not self.skip:
                self.parts.append(data)

    parser = _Text()
    parser.feed(page)
    return "".join(parser.parts).strip()


def assert_self_contained(page: str) -> None:
    """Nothing fetched, nothing run: an air-gapped reader's browser opens it as it is."""
    import re

    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page, re.I)
    lowered = page.lower()
    assert "<script" not in lowered and "<link" not in lowered and "<img" not in lowered
    assert "@import" not in page and "url(" not in page
    assert "default-src 'none'" in page


def verify_map(run_cli: Any, inputs: Inputs, *extra: str | Path) -> Any:
    """`function-map verify` of the inputs' map over their observations (crypto is below its
    minimum: exit 1), with `extra` options."""
    return run_cli(
        "function-map",
        "verify",
        "--function-map",
        inputs.function_map,
        "--observations",
        inputs.observations,
        *extra,
    )
