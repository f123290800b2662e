"""SBOMs as real producers write them, and as they go wrong: every field generate reads is
checked against the CycloneDX schema's type and refused naming its path, the components of a
BOM's own subject (`metadata.component.components`) are read, other encodings are named, and
no document makes `function-map generate` fail otherwise than with one line and exit 2."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stella_bundle.errors import StellaError
from stella_bundle.functionmap.generate import GenerateOptions, generate_function_map
from tests.conftest import scaled_examples
from tests.functionmap.functionmap_helpers import JAVA_SBOM

LIBSSL = {"type": "library", "name": "libssl3", "version": "3.0.17-1~deb12u2",
          "purl": "pkg:deb/debian/libssl3@3.0.17-1~deb12u2?arch=amd64"}  # fmt: skip


def _bom(components: list[Any], **extra: Any) -> dict[str, Any]:
    return {"bomFormat": "CycloneDX", "specVersion": "1.5", "components": components, **extra}


def _stack(*frames: Any) -> dict[str, Any]:
    return {"name": "app", "evidence": {"callstack": {"frames": list(frames)}}}


REFUSED = [
    # A numeric version was dropped, a numeric purl made the component pkg:generic/NAME.
    (_bom([{"name": "libssl3", "version": 3.0}]), "components[0].version", "a string"),
    (_bom([{"name": "libssl3", "purl": 5}]), "components[0].purl", "a string"),
    (_bom([{"name": "a", "components": [{"name": "b", "group": ["x"]}]}]),
     "components[0].components[0].group", "a string"),
    # Passed over when not of the expected type: the evidence of the component was lost.
    (_bom([{"name": "app", "evidence": [{"callstack": {}}]}]), "components[0].evidence",
     "an object"),
    (_bom([{"name": "app", "evidence": {"callstack": []}}]), "components[0].evidence.callstack",
     "an object"),
    (_bom([{"name": "app", "evidence": {"callstack": {"frames": {"0": {}}}}}]),
     "components[0].evidence.callstack.frames", "a list"),
    (_bom([_stack({"function": "main"}, "run")]), "components[0].evidence.callstack.frames[1]",
     "an object"),
    (_bom([_stack({"function": 7})]), "components[0].evidence.callstack.frames[0].function",
     "a string"),
    (_bom([{"name": "app", "evidence": {"occurrences": [{"symbol": ["SSL_new"]}]}}]),
     "components[0].evidence.occurrences[0].symbol", "a string"),
    (_bom([], metadata=[{"component": LIBSSL}]), "metadata", "an object"),
    (_bom([], metadata={"component": {"name": "app", "components": [{"name": 5}]}}),
     "metadata.component.components[0].name", "component has no name"),
    (_bom([], metadata={"component": {}}), "metadata.component.name", "component has no name"),
]  # fmt: skip


@pytest.mark.parametrize("document, field, words", REFUSED)
def test_a_field_of_another_type_is_refused_naming_its_path(
    tmp_path: Path, run_cli: Any, document: dict[str, Any], field: str, words: str
) -> None:
    sbom = tmp_path / "app.cdx.json"
    sbom.write_text(json.dumps(document))
    output = tmp_path / "fm.json"
    done = run_cli("function-map", "generate", "--sbom", sbom, "--service", "s", "--output", output)
    assert done.exit_code == 2
    assert done.stderr.startswith(f"error: {sbom}: field '{field}': "), done.stderr
    assert words in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not output.exists()


@pytest.mark.parametrize(
    "content, words",
    [
        (b'<?xml version="1.0"?>\n<bom xmlns="http://cyclonedx.org/schema/bom/1.5"/>\n',
         "CycloneDX XML is not read"),
        (b"\xef\xbb\xbf  <bom/>", "CycloneDX XML is not read"),
        (b"SPDXVersion: SPDX-2.3\nDataLicense: CC0-1.0\n", "an SPDX tag-value document"),
        (json.dumps({"spdxVersion": "SPDX-2.2", "packages": []}).encode(), "SPDX is not read"),
    ],
)  # fmt: skip
def test_other_encodings_are_named(
    tmp_path: Path, run_cli: Any, content: bytes, words: str
) -> None:
    sbom = tmp_path / "app.sbom"
    sbom.write_bytes(content)
    done = run_cli("function-map", "generate", "--sbom", sbom, "--service", "s",
                   "--output", tmp_path / "fm.json")  # fmt: skip
    assert done.exit_code == 2
    assert words in done.stderr and str(sbom) in done.stderr and done.stderr.count("\n") == 1


def _paths(document: dict[str, Any], tmp_path: Path, name: str = "app.cdx.json") -> list[Any]:
    sbom = tmp_path / name
    sbom.write_text(json.dumps(document))
    result = generate_function_map(GenerateOptions(sbom=sbom, service="s"))
    return [path.to_dict() for path in result.function_map.expected_paths]


def test_the_components_of_the_boms_own_subject_are_read(tmp_path: Path) -> None:
    """A BOM of a BOM puts the parts of its subject under metadata.component.components: they
    were passed over (no path for libssl3 here)."""
    top = _paths(_bom([LIBSSL]), tmp_path, "top.json")
    nested = _bom([], metadata={"component": {"name": "app", "components": [LIBSSL]}})
    assert top and _paths(nested, tmp_path, "nested.json") == top


# --- no document makes generate fail otherwise than with one line, exit 2 -------------------

_SEED = json.loads(JAVA_SBOM.read_text())
_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6,
)  # fmt: skip
# Where a real document varies: the fields generate reads.
_FIELDS = ["name", "version", "group", "purl", "evidence", "components", "bom-ref", "type"]
_EVIDENCE = [("evidence", "callstack"), ("evidence", "callstack", "frames"),
             ("evidence", "occurrences")]  # fmt: skip


@st.composite
def _mutated(draw: st.DrawFn) -> dict[str, Any]:
    document = copy.deepcopy(_SEED)
    components = document["components"]
    for _ in range(draw(st.integers(1, 4))):
        target = components[draw(st.integers(0, len(components) - 1))]
        how = draw(st.sampled_from(["field", "evidence", "frame", "nest", "root", "drop"]))
        if how == "field":
            target[draw(st.sampled_from(_FIELDS))] = draw(_ANY_JSON)
        elif how == "evidence":
            holder: Any = target
            keys = draw(st.sampled_from(_EVIDENCE))
            for key in keys[:-1]:
                if not isinstance(holder.get(key), dict):
                    holder[key] = {}
                holder = holder[key]
            holder[keys[-1]] = draw(_ANY_JSON)
        elif how == "frame":
            frames = (
                target.setdefault("evidence", {})
                .setdefault("callstack", {})
                .setdefault("frames", [])
            )
            if isinstance(frames, list):
                frames.append(draw(st.dictionaries(
                    st.sampled_from(["package", "module", "function", "line", "fullFilename"]),
                    _ANY_JSON, max_size=4)))  # fmt: skip
        elif how == "nest":
            moved = components.pop(draw(st.integers(0, len(components) - 1)))
            if components:
                host = components[draw(st.integers(0, len(components) - 1))]
                if isinstance(host, dict):
                    host.setdefault("components", []).append(moved)
                    continue
            components.append(moved)
        elif how == "root":
            document["metadata"]["component"].setdefault("components", []).append(
                components.pop(draw(st.integers(0, len(components) - 1)))
            )
        elif len(components) > 1:
            components.pop(draw(st.integers(0, len(components) - 1)))
        if not components:
            components.append(dict(LIBSSL))
    return document


@settings(
    max_examples=scaled_examples(150),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(document=_mutated())
def test_a_varied_real_sbom_is_read_or_refused_in_one_line(
    document: dict[str, Any], tmp_path: Path
) -> None:
    sbom = tmp_path / "app.cdx.json"
    sbom.write_text(json.dumps(document))
    try:
        generate_function_map(GenerateOptions(sbom=sbom, service="s"))
    except StellaError as exc:  # anything else (TypeError, AttributeError) fails the test
        assert exc.exit_code == 2, exc
        line = str(exc)
        assert line.startswith(f"{sbom}: ") and "\n" not in line, line
