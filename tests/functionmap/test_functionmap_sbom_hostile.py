"""SBOMs as real producers write them, and as they go wrong: every field generate reads is
checked against the CycloneDX schema's type and refused naming its path, the components of a
BOM's own subject (`metadata.component.components`) are read, other encodings are named, and
no document makes `function-map generate` fail otherwise than with one line and exit 2."""

from __future__ import annotations

import copy
import json
import random
import re
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
    # An invalid purl says why (it said only "invalid purl").
    (_bom([{"name": "libssl3", "purl": "pkg:deb"}]), "components[0].purl",
     "'pkg:deb': purl is missing the required type component"),
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
    # The field, and where it is in the file (the JSON's own line and column).
    assert re.match(rf"error: {re.escape(str(sbom))}:1:\d+: field '{re.escape(field)}': ",
                    done.stderr), done.stderr  # fmt: skip
    assert words in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not output.exists()


def test_an_sbom_error_is_placed_at_its_line(tmp_path: Path) -> None:
    """The field's path, and its line and column in the file (the real SBOM is 2 MB)."""
    document = copy.deepcopy(_SEED)
    document["components"][40]["purl"] = 7
    sbom = tmp_path / "app.cdx.json"
    text = json.dumps(document, indent=2)
    sbom.write_text(text)
    line = text[: text.index('"purl": 7')].count("\n") + 1
    with pytest.raises(StellaError) as caught:
        generate_function_map(GenerateOptions(sbom=sbom, service="s"))
    assert str(caught.value) == (
        f"{sbom}:{line}:15: field 'components[40].purl': expected a string, found a number"
    )


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


def test_a_null_optional_field_is_absent(tmp_path: Path) -> None:
    """Serialisers write nulls for what they do not have: read as absent, never refused."""
    nulls = {"group": None, "version": None, "purl": None, "evidence": None, "components": None}
    document = _bom([{**nulls, "name": "libssl3"}, LIBSSL], metadata=None)
    assert _paths(document, tmp_path) == _paths(_bom([LIBSSL]), tmp_path, "plain.json")


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
            holder = target
            for key in ("evidence", "callstack"):  # made objects, unless a draw made them not
                holder = holder.setdefault(key, {}) if isinstance(holder, dict) else None
            frames = holder.setdefault("frames", []) if isinstance(holder, dict) else None
            if isinstance(frames, list):
                frames.append(draw(st.dictionaries(
                    st.sampled_from(["package", "module", "function", "line", "fullFilename"]),
                    _ANY_JSON, max_size=4)))  # fmt: skip
        elif how == "nest":
            moved = components.pop(draw(st.integers(0, len(components) - 1)))
            if components:
                host = components[draw(st.integers(0, len(components) - 1))]
                if isinstance(host, dict) and isinstance(host.setdefault("components", []), list):
                    host["components"].append(moved)
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
    max_examples=scaled_examples(50),
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
        assert re.match(rf"{re.escape(str(sbom))}(:\d+:\d+)?: ", line), line
        assert "\n" not in line, line


# --- the map is the same whatever the order of components and however a purl is spelt -----

# Two components of one rank for the OpenSSL catalog entry (multiarch libssl3), and the
# command-line tool, which ranks below them; two modules of one Maven group, which the seed's
# call-stack frames (package com.example.vulnspring) fit equally.
_TIES = [
    dict(LIBSSL),
    {**LIBSSL, "purl": LIBSSL["purl"].replace("amd64", "i386")},
    {"type": "application", "name": "openssl", "version": "3.0.17-1~deb12u2",
     "purl": "pkg:deb/debian/openssl@3.0.17-1~deb12u2?arch=amd64"},
    {"type": "library", "name": "web", "group": "com.example.vulnspring", "version": "1.0",
     "purl": "pkg:maven/com.example.vulnspring/web@1.0?type=jar"},
    {"type": "library", "name": "api", "group": "com.example.vulnspring", "version": "1.0",
     "purl": "pkg:maven/com.example.vulnspring/api@1.0?type=jar"},
]  # fmt: skip


def _respelt(purl: str, rnd: Any) -> str:
    """The same package URL written otherwise: the type in capitals, characters of the
    namespace, name and version percent-encoded, qualifier keys in capitals and reordered."""
    body, _, qualifiers = purl.removeprefix("pkg:").partition("?")
    kind, _, rest = body.partition("/")
    if rnd.random() < 0.5:
        kind = kind.upper()
    rest = "".join(f"%{ord(c):02X}" if c.isalnum() and rnd.random() < 0.2 else c for c in rest)
    pairs = [pair.split("=", 1) for pair in qualifiers.split("&") if pair]
    rnd.shuffle(pairs)
    written = "&".join(f"{k.upper() if rnd.random() < 0.5 else k}={v}" for k, v in pairs)
    return f"pkg:{kind}/{rest}" + (f"?{written}" if written else "")


def _shuffled(value: Any, rnd: Any) -> Any:
    """The same JSON value with every object's keys in another order."""
    if isinstance(value, list):
        return [_shuffled(item, rnd) for item in value]
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {key: _shuffled(item, rnd) for key, item in items}
    return value


def _rewritten(rnd: Any) -> dict[str, Any]:
    document = copy.deepcopy(_SEED)
    components = [*document.pop("components"), *copy.deepcopy(_TIES)]
    rnd.shuffle(components)
    for component in components:
        if isinstance(component.get("purl"), str):
            component["purl"] = _respelt(component["purl"], rnd)
    # Nested anywhere: under an earlier component, under the BOM's subject, or at the top.
    top: list[Any] = []
    root = document["metadata"]["component"]
    for index, component in enumerate(components):
        where = rnd.randrange(index + 2)
        if where == index + 1:
            root.setdefault("components", []).append(component)
        elif where == index:
            top.append(component)
        else:
            components[where].setdefault("components", []).append(component)
    document["components"] = top
    return _shuffled(document, rnd)


def _map_of(document: dict[str, Any], path: Path) -> tuple[list[Any], dict[str, int]]:
    path.write_text(json.dumps(document))
    result = generate_function_map(GenerateOptions(sbom=path, service="s"))
    return [p.to_dict() for p in result.function_map.expected_paths], result.sources


_BASELINE: list[tuple[list[Any], dict[str, int]]] = []


@settings(
    max_examples=scaled_examples(30),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(number=st.integers(0, 2**32))
def test_the_map_does_not_depend_on_order_or_spelling(number: int, tmp_path: Path) -> None:
    """The order of components means nothing in CycloneDX, nor where they nest, nor how a
    purl or an object is written: the first in the document won a catalog entry's tie
    (libssl3 of two architectures) and a frame's namespace tie (a Maven group's modules)."""
    if not _BASELINE:
        seed = copy.deepcopy(_SEED)
        seed["components"] += copy.deepcopy(_TIES)
        _BASELINE.append(_map_of(seed, tmp_path / "seed.json"))
    paths, sources = _map_of(_rewritten(random.Random(number)), tmp_path / "app.cdx.json")
    assert sources == _BASELINE[0][1]
    assert paths == _BASELINE[0][0]


def test_a_tie_for_a_catalog_entry_is_named(tmp_path: Path) -> None:
    sbom = tmp_path / "app.cdx.json"
    sbom.write_text(json.dumps(_bom(copy.deepcopy(_TIES))))
    result = generate_function_map(GenerateOptions(sbom=sbom, service="s"))
    used = {node.purl for path in result.function_map.expected_paths for node in path.nodes}
    assert used == {"pkg:deb/debian/libssl3@3.0.17-1~deb12u2?arch=amd64"}
    assert (
        "catalog entry openssl: 2 components match it equally; its symbols are expected of "
        "pkg:deb/debian/libssl3@3.0.17-1~deb12u2?arch=amd64, not of "
        "pkg:deb/debian/libssl3@3.0.17-1~deb12u2?arch=i386"
    ) in result.warnings


def test_a_component_listed_twice_gives_one_path_whatever_the_order(tmp_path: Path) -> None:
    """One purl under two names (the catalog's `openssl` and a vendor's): the two candidates
    of its occurrence are one path, and which one it was (its tag) followed the order."""

    def listed(name: str) -> dict[str, Any]:
        return {"name": name, "purl": "pkg:generic/vendored-tls@2.0",
                "evidence": {"occurrences": [{"symbol": "vendor_handshake"}]}}  # fmt: skip

    first = _paths(_bom([listed("openssl"), listed("vendored-tls")]), tmp_path, "a.json")
    second = _paths(_bom([listed("vendored-tls"), listed("openssl")]), tmp_path, "b.json")
    assert first == second
    assert [p["tag"] for p in first if p["path_id"].startswith("occurrence/")] == ["crypto"]


# --- what is passed over is counted in the map ---------------------------------------------


def test_what_is_passed_over_is_counted_in_the_signed_map(tmp_path: Path, run_cli: Any) -> None:
    """Frames without a function and occurrences without a symbol (the schema allows both)
    were dropped without a count: now the map's sbom.skipped says how many, and a warning."""
    from stella_bundle.formats.function_map import FunctionMap
    from stella_bundle.functionmap.load import load_function_map

    app = _stack(
        {"module": "app.main", "function": "serve"},
        {"module": "app.util"},
        {"module": "app.db", "function": "  "},
        {"module": "app.db", "function": "query"},
    )
    app["evidence"]["occurrences"] = [{"location": "/usr/lib/libapp.so"}, {"symbol": ""},
                                      {"symbol": "app_init"}]  # fmt: skip
    sbom = tmp_path / "app.cdx.json"
    sbom.write_text(json.dumps(_bom([app])))
    output = tmp_path / "fm.json"
    done = run_cli("function-map", "generate", "--sbom", sbom, "--service", "s", "--output", output)
    assert done.exit_code == 0, done.stderr
    counts = {"callstack_frame_without_function": 2, "occurrence_without_symbol": 2}
    assert json.loads(output.read_text())["predicate"]["sbom"]["skipped"] == counts
    assert load_function_map(output).function_map.sbom.skipped == counts
    assert (
        "passed over (counted in the map's sbom.skipped): 2 callstack_frame_without_function, "
        "2 occurrence_without_symbol"
    ) in done.stderr
    # A map without anything skipped is written as before (no key); a count must be >= 1.
    assert "skipped" not in _map_statement(_bom([LIBSSL]), tmp_path)["predicate"]["sbom"]
    predicate = json.loads(output.read_text())["predicate"]
    predicate["sbom"]["skipped"]["occurrence_without_symbol"] = 0
    with pytest.raises(StellaError, match=r"field 'sbom.skipped.occurrence_without_symbol'"):
        FunctionMap.from_dict(predicate, "fm.json")


def _map_statement(document: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    sbom = tmp_path / "plain.cdx.json"
    sbom.write_text(json.dumps(document))
    return generate_function_map(GenerateOptions(sbom=sbom, service="s")).statement


def test_the_real_sboms_location_only_occurrences_are_counted() -> None:
    result = generate_function_map(GenerateOptions(sbom=JAVA_SBOM, service="s"))
    assert result.function_map.sbom.skipped == {"occurrence_without_symbol": 38}


# --- a user catalog (--catalog) is a configuration file ------------------------------------


@pytest.mark.parametrize(
    "text, place, field, words",
    [
        # A misspelt `names`: the entry matched only its own name, without a word.
        ('{"components": [{"name": "acme-tls",\n  "nmes": ["libacme*"], "symbols": []}]}',
         "2:11", "components[0].nmes", "unknown key"),
        ('{"components": [{"name": "acme-tls", "symbols": [\n  {"symbol": "acme_init",'
         ' "tag": "crypto", "tags": ["x"]}]}]}', "2:52", "components[0].symbols[0].tags",
         "unknown key"),
        # A misspelt parent: the entry inherited nothing.
        ('{"components": [{"name": "acme-libc",\n  "inherit": "glibcc"}]}', "2:14",
         "components[0].inherit", "no catalog entry named 'glibcc'"),
        ('{"components": [{"name": "musl",\n  "inherit": "openssl"}]}', "2:14",
         "components[0].inherit", "adds names and symbols only"),
        ('{"catalog_version": 2,\n "components": []}', "1:21", "catalog_version",
         "expected catalog_version 1"),
    ],
)  # fmt: skip
def test_a_user_catalog_is_read_as_written_or_refused_at_its_line(
    tmp_path: Path, run_cli: Any, text: str, place: str, field: str, words: str
) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_text(text)
    sbom = tmp_path / "app.cdx.json"
    sbom.write_text(json.dumps(_bom([LIBSSL])))
    done = run_cli("function-map", "generate", "--sbom", sbom, "--service", "s",
                   "--catalog", catalog, "--output", tmp_path / "fm.json")  # fmt: skip
    assert done.exit_code == 2
    assert done.stderr.startswith(f"error: {catalog}:{place}: field '{field}': "), done.stderr
    assert words in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_a_large_sbom_costs_in_proportion_to_its_size(tmp_path: Path) -> None:
    """Each call-stack frame's owner was looked for by reading every component's namespace,
    from its purl when it has no group (npm, golang, most producers' Maven): frames x
    components purl parses (4 million here, about 40 CPU seconds). A bound on the work, in
    CPU seconds, as for the bombs: not a benchmark."""
    from tests.conftest import cpu_seconds

    components: list[dict[str, Any]] = [
        {"name": f"lib{i}", "version": "1", "purl": f"pkg:maven/org.acme.m{i % 97}/lib{i}@1"}
        for i in range(2000)
    ]
    frames = [{"package": f"org.acme.m{j % 97}.impl", "module": "Service", "function": f"f{j}"}
              for j in range(2000)]  # fmt: skip
    components[0]["evidence"] = {"callstack": {"frames": frames}}
    sbom = tmp_path / "large.cdx.json"
    sbom.write_text(json.dumps(_bom(components)))
    started = cpu_seconds()
    result = generate_function_map(GenerateOptions(sbom=sbom, service="s"))
    assert cpu_seconds() - started < 15
    (path,) = result.function_map.expected_paths
    assert len(path.nodes) == 2000
    # The owner of a frame is the least purl of its namespace.
    group = [c["purl"] for c in components if "/org.acme.m1/" in c["purl"]]
    assert path.nodes[1].purl == min(group) == "pkg:maven/org.acme.m1/lib1068@1"


@pytest.mark.parametrize("value", ["abc", "1_769_126_400", " 1769126400", "+1769126400",
                                   "99999999999999", "１７６９"])  # fmt: skip
def test_a_source_date_epoch_that_is_not_seconds_is_refused(
    tmp_path: Path, run_cli: Any, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """int() took the underscores, the sign and the spaces, and raised on the rest and on a
    year past 9999: an internal error (exit 3) of generate and of bundle build."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    sbom = tmp_path / "app.cdx.json"
    sbom.write_text(json.dumps(_bom([LIBSSL])))
    output = tmp_path / "fm.json"
    done = run_cli("function-map", "generate", "--sbom", sbom, "--service", "s", "--output", output)
    assert done.exit_code == 2
    assert done.stderr.startswith(
        "error: field 'SOURCE_DATE_EPOCH (environment variable)': expected whole seconds"
    ), done.stderr
    assert done.stderr.count("\n") == 1 and not output.exists()


def test_a_call_graph_off_its_schema_is_one_short_line(tmp_path: Path, run_cli: Any) -> None:
    """jsonschema's message echoes the value: a mapping of 100,000 characters where the nodes'
    list belongs made a 100 kB error line. The toolkit's schema check shows it clipped."""
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps({"format": "stella-static-callgraph/v1", "nodes": {"x" * 100_000: 1},
                                 "edges": [], "entrypoints": []}))  # fmt: skip
    sbom = tmp_path / "app.cdx.json"
    sbom.write_text(json.dumps(_bom([LIBSSL])))
    done = run_cli("function-map", "generate", "--sbom", sbom, "--service", "s",
                   "--static-analysis", graph, "--output", tmp_path / "fm.json")  # fmt: skip
    assert done.exit_code == 2
    assert done.stderr.startswith(f"error: {graph}: field 'nodes': "), done.stderr[:300]
    assert "expected array, found object" in done.stderr
    assert len(done.stderr) < 500 and done.stderr.count("\n") == 1


def test_a_huge_bom_format_is_quoted_clipped(tmp_path: Path, run_cli: Any) -> None:
    sbom = tmp_path / "app.json"
    sbom.write_text(json.dumps({"bomFormat": "x" * 200_000, "specVersion": "1.5"}))
    done = run_cli("function-map", "generate", "--sbom", sbom, "--service", "s",
                   "--output", tmp_path / "fm.json")  # fmt: skip
    assert done.exit_code == 2 and "not a CycloneDX SBOM" in done.stderr
    assert len(done.stderr) < 400, len(done.stderr)
