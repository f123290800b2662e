"""The compiled fold (coverage/_fold.c) against the Python fold, its reference: the same
per-node state (values and order) and the same errors for generated records — duplicate and
unknown nodes, unsorted and odd times, every probe type, every record struct, bad hashes — and
the same reports for generated files. Under CI=true the compiled fold must be the one in use."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import UNSET

from stella_bundle.coverage import VerifyOptions, compiled
from stella_bundle.coverage import engine as engine_module
from stella_bundle.coverage import scan as scan_module
from stella_bundle.coverage.fastdecode import LightRecord, PlainRecord, Record
from stella_bundle.coverage.scan import ObservationAggregator, PyNodeAggregate, _BadDate
from stella_bundle.formats.function_map import FunctionMap
from stella_bundle.formats.record import PROBE_TYPES
from tests.conftest import IN_CI, scaled_examples
from tests.coverage.test_coverage_parallel_scan import WINDOW, _map_outcome, _outcome, _write_map
from tests.coverage.test_coverage_parallel_scan import lines as ndjson_lines
from tests.functionmap.functionmap_helpers import make_map, write_debian_sbom

needs_compiled = pytest.mark.skipif(compiled.FOLD is None, reason=compiled.STATUS)

HEX = "0123456789abcdef"
MAP = ["sha256:" + HEX[i] * 64 for i in range(4)]
UNKNOWN = ["sha256:" + HEX[i] * 64 for i in range(10, 13)]
BAD_HASHES = ["sha256:XYZ", "sha256:" + "é" * 64, "", "sha256:" + "a" * 200]
STAMPS = [f"2026-01-23T00:{m:02d}:{s:02d}.000000Z" for m, s in ((5, 1), (0, 0), (59, 59), (5, 0))]


def test_the_compiled_fold_is_in_use_in_ci() -> None:
    """CI must not measure (or test) the fallback without saying so: setup.sh's editable
    install builds the extension, and a stale or missing build fails here."""
    if not IN_CI:
        pytest.skip(f"outside CI the fold in use may be the fallback: {compiled.STATUS}")
    assert compiled.STATUS == "compiled"
    assert scan_module.NodeAggregate is not PyNodeAggregate
    assert ObservationAggregator()._index is not None


@st.composite
def records(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from([LightRecord, PlainRecord, Record]))
    rare_bad = draw(st.integers(0, 30)) == 0  # a bad hash ends the fold: seldom
    node_hash = draw(st.sampled_from(BAD_HASHES if rare_bad else MAP * 3 + UNKNOWN * 2))
    observed = draw(
        st.sampled_from(STAMPS)
        | st.text(max_size=40)  # odd strings: long, empty, non-ASCII (the exact comparisons)
    )
    purl = draw(st.sampled_from([UNSET, "pkg:generic/a@1", "pkg:generic/b@2"]))
    name = draw(st.sampled_from(["f", "g\u00e9"]))
    probe = draw(st.sampled_from(PROBE_TYPES))
    if kind is Record:
        return Record(node_hash, name, observed, probe, purl)
    return kind(
        function_name=name, node_hash=node_hash, observed_at=observed, probe_type=probe, purl=purl
    )


def _run(aggregator: ObservationAggregator, blocks: list[tuple[bool, list[Any]]]) -> Any:
    """Fold the blocks (the ones marked Python-only by the Python loop, as another path would
    add nodes between two compiled folds); the state, in order, and the error if one."""
    error = None
    for python_only, block in blocks:
        index = aggregator._index
        if python_only:
            aggregator._index = None
        try:
            aggregator._plain_records(block)
        except _BadDate:
            error = "bad"
            break
        finally:
            aggregator._index = index
    state = aggregator.export()
    return [list(state[0].items()), list(state[1].items()), *state[2:]], error


@needs_compiled
@settings(max_examples=scaled_examples(300), deadline=None)
@given(
    blocks=st.lists(st.tuples(st.booleans(), st.lists(records(), max_size=30)), max_size=5),
    split=st.booleans(),
)
def test_compiled_fold_gives_the_python_folds_state(
    blocks: list[tuple[bool, list[Any]]], split: bool
) -> None:
    mine = ObservationAggregator(MAP if split else None, unsplit=not split)
    reference = ObservationAggregator(MAP if split else None, unsplit=not split, compiled=False)
    assert mine._index is not None and reference._index is None
    assert type(next(iter(reference.expected.values()), PyNodeAggregate())) is PyNodeAggregate
    assert _run(mine, blocks) == _run(reference, blocks)
    for node in mine.expected.values():
        assert isinstance(node, scan_module.NodeAggregate)


@needs_compiled
def test_counts_and_bits_are_python_ints_when_read() -> None:
    aggregator = ObservationAggregator(MAP)
    block = [
        LightRecord(function_name="f", node_hash=MAP[0], observed_at=STAMPS[i % 4], probe_type=p)
        for i, p in enumerate(PROBE_TYPES * 100)
    ]
    aggregator._plain_records(block)
    state = aggregator.expected[MAP[0]]
    assert state.count == len(block) and type(state.count) is int
    assert state.probe_mask == (1 << len(PROBE_TYPES)) - 1
    assert (state.first, state.last) == (min(STAMPS), max(STAMPS))
    state.count += 2**70  # the values stay Python ints: no C limit shows
    aggregator._plain_records(block[:1])
    assert state.count == len(block) + 2**70 + 1
    assert state.probe_types() == list(PROBE_TYPES)


@pytest.fixture(scope="module")
def fmap(tmp_path_factory: pytest.TempPathFactory) -> FunctionMap:
    sbom = write_debian_sbom(tmp_path_factory.mktemp("sbom") / "debian.cdx.json")
    return make_map(sbom, hot_functions=["openssl/SSL_read", "openssl/SSL_write", "net/connect"])


@needs_compiled
@settings(
    max_examples=scaled_examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_compiled_fold_gives_the_python_folds_reports(
    data: st.DataObject, fmap: FunctionMap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(scan_module, "_BLOCK", data.draw(st.sampled_from([300, 2000, 1 << 20])))
    nodes = sorted({(n.node_hash, n.symbol) for p in fmap.expected_paths for n in p.nodes})
    body = b"".join(data.draw(st.lists(ndjson_lines(nodes), min_size=5, max_size=80)))
    options = VerifyOptions(
        window_from=WINDOW.window_from if data.draw(st.booleans()) else None,
        workers=data.draw(st.sampled_from([1, 2])),
    )
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "observations.ndjson"
        path.write_bytes(body)
        map_file = _write_map(fmap, Path(directory), signed=False)
        outcomes = []
        for fold in (compiled.FOLD, None):
            with monkeypatch.context() as patch:
                patch.setattr(scan_module, "FOLD", fold)
                outcomes.append(
                    (
                        _outcome(fmap, path, options),
                        _map_outcome(map_file, path, dataclasses.replace(options, workers=2)),
                    )
                )
        assert outcomes[0] == outcomes[1]
