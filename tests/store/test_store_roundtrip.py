"""Round trip: a sealed chain ingested into each backend answers like the file path."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from store_support import make_map, observations, write_chain, write_map

from stella_bundle.coverage import VerifyOptions, verify_observations
from stella_bundle.coverage.inputs import iter_evidence_records
from stella_bundle.coverage.query import QueryFilter, filter_records, summarise
from stella_bundle.formats.trust_root import TrustRoot
from stella_bundle.functionmap.load import load_function_map
from stella_bundle.store import (
    ingest_evidence,
    open_store,
    query_records,
    query_summary,
    verify_stored,
)

UTC = dt.UTC


@pytest.fixture
def evidence(tmp_path: Path, test_keys: Any) -> Path:
    """Two sealed chains (most paths observed, strays outside the map) over three days."""
    fmap = make_map()
    records = observations(fmap, days=3)
    directory = tmp_path / "evidence"
    signer = test_keys.signer("collector")
    write_chain(directory, "chain-a", records[: len(records) // 2], signer)
    write_chain(directory, "chain-b", records[len(records) // 2 :], signer, per_chunk=7)
    return directory


SELECTIONS = [
    QueryFilter(),
    QueryFilter(service="svc"),
    QueryFilter(container="c" + "0" * 62 + "1"),
    QueryFilter(symbol="stray_*"),
    QueryFilter(window_from="2026-01-21T00:00:00.000000Z", window_to="2026-01-21T12:00:00.000000Z"),
]

WINDOWS = [
    (None, None),
    (dt.datetime(2026, 1, 21, tzinfo=UTC), dt.datetime(2026, 1, 21, 23, 59, tzinfo=UTC)),
    (dt.datetime(2026, 1, 20, 5, tzinfo=UTC), None),
    (dt.datetime(2030, 1, 1, tzinfo=UTC), None),  # nothing in the window
]


def test_roundtrip_every_backend(
    backend_url: str, evidence: Path, tmp_path: Path, test_keys: Any
) -> None:
    root = TrustRoot.load(test_keys.trust_root)
    loaded = load_function_map(write_map(tmp_path / "fm.json"))
    with open_store(backend_url, initialise=True) as store:
        result = ingest_evidence(store, evidence, root)
        file_records = list(iter_evidence_records(evidence))
        assert result.records_stored == len(file_records) > 0
        assert not result.conflicts
        for selection in SELECTIONS:
            from_files = list(filter_records(iter_evidence_records(evidence), selection))
            assert list(query_records(store, selection)) == from_files
            assert [s.to_dict() for s in query_summary(store, selection)] == [
                s.to_dict() for s in summarise(from_files)
            ]
        for window_from, window_to in WINDOWS:
            options = VerifyOptions(window_from=window_from, window_to=window_to)
            expected = verify_observations(
                loaded, iter_evidence_records(evidence), options, validated=True
            )
            actual = verify_stored(store, loaded, options)
            assert actual.to_dict() == expected.to_dict()
            assert actual.function_map == expected.function_map
        # Every stored row traces to its signed seal.
        stored = next(iter(store.iter_records()))
        provenance = store.provenance(stored.chain_id, stored.sequence)
        assert provenance is not None and provenance.signed
        assert set(provenance.collector_key_ids) == {k.keyid for k in root.role_keys("collector")}
        seal = store.seal_bytes(stored.chain_id, stored.sequence)
        assert seal is not None
        import hashlib

        assert hashlib.sha256(seal).hexdigest() == provenance.seal_sha256


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_roundtrip_cli(
    backend: str, evidence: Path, tmp_path: Path, test_keys: Any, run_cli: Any, request: Any
) -> None:
    """The commands print the same summary and the same verification report either way."""
    url = (
        f"sqlite:///{tmp_path / 's.sqlite'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    fm = write_map(tmp_path / "fm.json")
    done = run_cli(
        "observations",
        "ingest",
        "--evidence",
        evidence,
        "--trust-root",
        test_keys.trust_root,
        "--store",
        url,
        "--format",
        "json",
    )
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["chunks_stored"] > 0
    for extra in ([], ["--service", "svc"], ["--from", "2026-01-21T00:00:00Z"]):
        files = run_cli(
            "observations", "query", "--evidence", evidence, "--summary", "--format", "json", *extra
        )
        stored = run_cli(
            "observations", "query", "--store", url, "--summary", "--format", "json", *extra
        )
        assert files.exit_code == stored.exit_code == 0, stored.stderr
        assert stored.stdout == files.stdout
    window = ["--from", "2026-01-20T03:00:00Z", "--to", "2026-01-21T18:00:00Z"]
    files = run_cli(
        "function-map",
        "verify",
        "--function-map",
        fm,
        "--evidence",
        evidence,
        "--format",
        "json",
        *window,
    )
    stored = run_cli(
        "function-map", "verify", "--function-map", fm, "--store", url, "--format", "json", *window
    )
    assert files.exit_code == stored.exit_code == 1  # two paths are never observed
    assert stored.stdout == files.stdout
    # The map (by digest) and the report were kept in the store.
    with open_store(url) as store:
        maps = store.list_function_maps()
        assert [m.digest for m in maps] == [json.loads(files.stdout)["function_map"]["digest"]]
        reports = store.list_reports(maps[0].digest)
        assert len(reports) == 1 and reports[0].report == json.loads(stored.stdout)
        assert reports[0].verified is False
