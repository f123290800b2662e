"""Differential: the engine's evaluation (made faster for the API's verifications, issue 11)
writes the report the reference assembly wrote (tests/coverage/evaluation_reference.py, the
engine before the change), byte for byte as stored and answered, for generated maps (multi-node
paths, shared and repeated nodes, optional paths, nodes with a binary, build id or probe
types, tags with minimums, a scope or none) and records (observed, unexpected, diagnosed as
version drift or normalisation mismatch, aggregated, out of window, out of scope), folded by
the compiled fold and by the Python one."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stella_bundle.coverage import VerifyOptions
from stella_bundle.coverage import engine as engine_module
from stella_bundle.coverage.compiled import FOLD
from stella_bundle.coverage.scan import ObservationAggregator
from stella_bundle.formats.function_map import (
    Coverage,
    ExpectedNode,
    ExpectedPath,
    FunctionMap,
    SbomRef,
)
from stella_bundle.formats.record import PROBE_TYPES
from stella_bundle.formats.scope import Scope
from stella_bundle.functionmap.load import LoadedFunctionMap
from stella_bundle.store import encode_report
from tests.conftest import scaled_examples
from tests.coverage import evaluation_reference

PURLS = ["pkg:deb/debian/openssl@3.0.1", "pkg:deb/debian/openssl@3.0.2", "pkg:generic/zlib@1.3"]
SYMBOLS = ["SSL_read", "SSL_write", "inflate", "deflate", "_ZN3foo3barEv"]
TAGS = ["crypto", "auth", "net", "general"]
STRAYS = ["sha256:" + digit * 64 for digit in "abcdef"]
NGINX = {"executable": "/usr/sbin/nginx"}
FOLDS = [pytest.param(True, id="compiled"), pytest.param(False, id="python")]


@st.composite
def nodes(draw: st.DrawFn) -> ExpectedNode:
    extras: dict[str, Any] = {}
    if draw(st.integers(0, 3)) == 0:  # most nodes are plain, as `generate` writes them
        if draw(st.booleans()):
            extras["binary_path"] = draw(st.sampled_from(["/usr/lib/libssl.so.3", "/bin/x"]))
        if draw(st.booleans()):
            extras["build_id"] = draw(st.sampled_from(["ab12", "cd34"]))
        if draw(st.booleans()):
            extras["probe_types"] = tuple(
                draw(st.lists(st.sampled_from(PROBE_TYPES), min_size=1, max_size=3, unique=True))
            )
    return ExpectedNode.create(
        draw(st.sampled_from(PURLS)), draw(st.sampled_from(SYMBOLS)), **extras
    )


@st.composite
def function_maps(draw: st.DrawFn) -> FunctionMap:
    pool = draw(st.lists(nodes(), min_size=1, max_size=8))
    paths = tuple(
        ExpectedPath(
            f"path/{index}",
            draw(st.sampled_from(TAGS)),
            draw(st.integers(0, 60)),
            draw(st.integers(0, 3)) == 0,
            tuple(draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4))),
        )
        for index in range(draw(st.integers(1, 10)))
    )
    minimums = draw(
        st.dictionaries(
            st.sampled_from([*TAGS, "exec"]),
            st.sampled_from([0.0, 0.25, 0.5, 1 / 3, 0.9, 1.0]),
            max_size=3,
        )
    )
    return FunctionMap(
        service="svc",
        build_id="build",
        generated_at="2026-01-23T00:00:00.000000Z",
        sbom=SbomRef("sha256:" + "0" * 64, "CycloneDX", "1.6"),
        coverage=Coverage(
            min_observation_rate=draw(st.sampled_from([0.0, 0.5, 0.95, 1.0])),
            fail_on_unexpected=draw(st.booleans()),
            tag_min_rates=minimums,
        ),
        hot_functions=(),
        expected_paths=paths,
        scope=Scope(**NGINX) if draw(st.booleans()) else None,
    )


@st.composite
def records(draw: st.DrawFn, fmap: FunctionMap) -> dict[str, Any]:
    node = draw(st.sampled_from(fmap.nodes()))
    kind = draw(st.sampled_from(["expected"] * 4 + ["stray", "drift", "spelling"]))
    minute = draw(st.integers(0, 59))
    record: dict[str, Any] = {
        "node_hash": node.node_hash if kind == "expected" else draw(st.sampled_from(STRAYS)),
        "function_name": node.symbol if kind != "stray" else draw(st.sampled_from(SYMBOLS)),
        "observed_at": f"2026-01-23T00:{minute:02d}:{draw(st.integers(0, 59)):02d}.000000Z",
    }
    if kind == "drift":  # the same function under another version of the package
        record["purl"] = draw(st.sampled_from(PURLS))
    elif kind == "spelling" or draw(st.booleans()):
        record["purl"] = node.purl
    if draw(st.booleans()):
        record["probe_type"] = draw(st.sampled_from(PROBE_TYPES))
    if draw(st.integers(0, 4)) == 0:
        record["count"] = draw(st.sampled_from([1, 3, 2**53 - 1]))
        record["first_observed_at"] = f"2026-01-23T00:{max(0, minute - 5):02d}:00.000000Z"
        record["last_observed_at"] = record["observed_at"]
    if draw(st.booleans()):
        context = draw(st.sampled_from([NGINX, {"executable": "/usr/bin/curl"}]))
        record["details"] = {"scope": context}
    return record


@st.composite
def options(draw: st.DrawFn) -> VerifyOptions:
    window = draw(st.sampled_from([(None, None), (10, 40), (None, 30), (20, None)]))
    return VerifyOptions(
        window_from=(
            None if window[0] is None else dt.datetime(2026, 1, 23, 0, window[0], tzinfo=dt.UTC)
        ),
        window_to=(
            None if window[1] is None else dt.datetime(2026, 1, 23, 0, window[1], tzinfo=dt.UTC)
        ),
        fail_on_unexpected=draw(st.sampled_from([None, True, False])),
        probe_weights=draw(
            st.dictionaries(
                st.sampled_from(PROBE_TYPES), st.sampled_from([0.0, 0.3, 1 / 3, 1.0]), max_size=3
            )
        ),
    )


@pytest.mark.parametrize("compiled", FOLDS)
@settings(max_examples=scaled_examples(150), deadline=None)
@given(data=st.data())
def test_the_engine_writes_the_reference_report(compiled: bool, data: st.DataObject) -> None:
    if compiled and FOLD is None:
        pytest.skip("the compiled fold is not built")
    fmap = data.draw(function_maps())
    chosen = data.draw(options())
    given_map: FunctionMap | LoadedFunctionMap = fmap
    if data.draw(st.booleans()):
        given_map = LoadedFunctionMap(fmap, {}, "sha256:" + "1" * 64, "map.json", True, False)
    window_from, window_to = chosen.window_strings()
    aggregator = ObservationAggregator(
        [node.node_hash for node in fmap.nodes()],
        window_from,
        window_to,
        fmap.scope,
        compiled=compiled,
    )
    for index, record in enumerate(data.draw(st.lists(records(fmap), max_size=40)), 1):
        aggregator.add_record(record, "<records>", index)
    reference = evaluation_reference.evaluate(given_map, aggregator, chosen)
    result = engine_module.evaluate(given_map, aggregator, chosen)
    assert result == reference
    document = result.report().to_dict()
    assert encode_report(document) == encode_report(reference.report().to_dict())
    # The nodes' probe type lists are the report's own, not the map's.
    for entry in document["per_path_breakdown"]:
        for node_entry in entry["nodes"]:
            assert type(node_entry.get("probe_types", [])) is list
