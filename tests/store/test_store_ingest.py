"""Ingest: verified first, idempotent per (chain, sequence), conflicts refused, bounds counted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from store_support import (
    NoRollups,
    make_map,
    observations,
    rollup_tables,
    write_chain,
    write_ndjson,
)

from stella_bundle.errors import EvidenceChainError, InputError
from stella_bundle.formats.trust_root import TrustRoot
from stella_bundle.store import ingest_evidence, ingest_ndjson, open_store
from stella_bundle.store.memory import MemoryStore


@pytest.fixture
def records() -> list[dict[str, Any]]:
    return observations(make_map(), days=2)


def test_reingest_adds_nothing_and_conflict_is_refused(
    backend_url: str, tmp_path: Path, test_keys: Any, records: list[dict[str, Any]]
) -> None:
    root = TrustRoot.load(test_keys.trust_root)
    signer = test_keys.signer("collector")
    first = write_chain(tmp_path / "one", "chain-x", records, signer)
    with open_store(backend_url, initialise=True) as store:
        stored = ingest_evidence(store, first.parent, root)
        chunks = stored.chunks_stored
        assert chunks > 1 and stored.records_stored == len(records)
        again = ingest_evidence(store, first.parent, root)
        assert (again.chunks_stored, again.records_stored) == (0, 0)
        assert again.chunks_already_stored == chunks
        assert store.status().records == len(records)
        # The same chain id sealed again with other records: every sequence conflicts.
        other = write_chain(tmp_path / "two", "chain-x", records[::-1], signer)
        refused = ingest_evidence(store, other.parent, root)
        assert refused.chunks_stored == 0 and refused.records_stored == 0
        assert refused.conflicts and refused.conflicts[0].chain_id == "chain-x"
        assert refused.conflicts[0].stored_seal_sha256 == store.stored_seals("chain-x")[1]
        assert refused.conflicts[0].offered_seal_sha256 != refused.conflicts[0].stored_seal_sha256
        # A longer chain with one more chunk after a conflict: nothing of it is stored either.
        status = store.status()
        assert (status.records, status.chunks) == (len(records), chunks)


def test_conflict_cli(
    tmp_path: Path, test_keys: Any, records: list[dict[str, Any]], run_cli: Any
) -> None:
    signer = test_keys.signer("collector")
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    first = write_chain(tmp_path / "one", "chain-x", records, signer)
    other = write_chain(tmp_path / "two", "chain-x", records[1:], signer)
    args = ("--trust-root", test_keys.trust_root, "--store", url)
    assert run_cli("observations", "ingest", "--evidence", first, *args).exit_code == 0
    again = run_cli("observations", "ingest", "--evidence", first, *args, "--format", "json")
    assert again.exit_code == 0 and json.loads(again.stdout)["records_stored"] == 0
    refused = run_cli("observations", "ingest", "--evidence", other, *args)
    assert refused.exit_code == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "conflicting chunk, nothing stored: chain chain-x sequence 1" in lines[0]
    assert url in lines[0]


def test_chain_failing_verification_stores_nothing(
    backend_url: str, tmp_path: Path, test_keys: Any, records: list[dict[str, Any]]
) -> None:
    root = TrustRoot.load(test_keys.trust_root)
    # Sealed by a key the trust root does not know.
    chain = write_chain(tmp_path / "e", "chain-s", records, test_keys.signer("stranger"))
    with open_store(backend_url, initialise=True) as store:
        with pytest.raises(EvidenceChainError, match="chain chain-s failed verification"):
            ingest_evidence(store, chain, root)
        with pytest.raises(InputError, match="trust root is required"):
            ingest_evidence(store, chain, None)
        assert store.status().records == 0 and store.status().chunks == 0


def test_tampered_chunk_stores_nothing(
    tmp_path: Path, test_keys: Any, records: list[dict[str, Any]]
) -> None:
    root = TrustRoot.load(test_keys.trust_root)
    good = write_chain(tmp_path / "e", "chain-a", records, test_keys.signer("collector"))
    bad = write_chain(tmp_path / "e", "chain-b", records, test_keys.signer("collector"))
    chunk = bad / "0000000002.ndjson.zst"
    chunk.write_bytes(chunk.read_bytes()[:-3] + b"\x00\x00\x00")
    with open_store(f"sqlite:///{tmp_path / 's.sqlite'}", initialise=True) as store:
        with pytest.raises(EvidenceChainError, match="chain-b failed verification"):
            ingest_evidence(store, good.parent, root)
        assert store.status().records == 0


@pytest.mark.parametrize("fault", ["last chunk tampered", "orphan chunk after the last seal"])
def test_a_chain_failing_at_its_end_stores_nothing(
    backend_url: str, tmp_path: Path, test_keys: Any, records: list[dict[str, Any]], fault: str
) -> None:
    """Chunks are stored while the chain is verified: here the verifier can only decide once
    every chunk was read, after the earlier chunks went into the transaction. Nothing is kept
    (rows, chunks, rollups), the message is the chain verifier's own, and the same chain
    repaired then ingests whole."""
    from stella_bundle.evidence.chain import verify_chain

    root = TrustRoot.load(test_keys.trust_root)
    chain = write_chain(tmp_path / "e", "chain-z", records, test_keys.signer("collector"), 5)
    last = max(int(p.name.split(".")[0]) for p in chain.glob("*.ndjson.zst"))
    assert last > 2
    target = chain / f"{last:010d}.ndjson.zst"
    original = target.read_bytes()
    if fault == "last chunk tampered":
        target.write_bytes(original[:-3] + b"\x00\x00\x00")
    else:
        (chain / f"{last + 1:010d}.ndjson.zst").write_bytes(original)
    report = verify_chain(chain, root, allow_open=True)
    first = next(f for f in report.findings if f.severity == "error")
    with open_store(backend_url, initialise=True) as store:
        with pytest.raises(EvidenceChainError) as caught:
            ingest_evidence(store, chain, root)
        assert f"chain chain-z failed verification, nothing stored: {first.code}:" in str(
            caught.value
        )
        status = store.status()
        assert (status.records, status.chunks) == (0, 0)
        if store.backend != "memory":
            rollups = store.db.execute("SELECT count(*) FROM node_rollups").fetchone()  # type: ignore[attr-defined]
            assert rollups[0] == 0
        target.write_bytes(original)
        (chain / f"{last + 1:010d}.ndjson.zst").unlink(missing_ok=True)
        assert ingest_evidence(store, chain, root).records_stored == len(records)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_rollups_folded_in_parts_are_the_rollups_folded_once(
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    records: list[dict[str, Any]],
) -> None:
    """A long ingest folds its rollups into the store every FLUSH_ENTRIES entries (bounded
    memory); the rows are those of one fold at the end (every ten-minute bucket rolled up:
    the density rule judges each fold's part of a bucket)."""
    from stella_bundle.store import rollups

    monkeypatch.setattr(rollups, "DENSE", 0)

    path = write_ndjson(tmp_path / "obs.ndjson", records)
    stored = []
    for flush in (rollups.FLUSH_ENTRIES, 3):
        monkeypatch.setattr(rollups, "FLUSH_ENTRIES", flush)
        url = (
            f"sqlite:///{tmp_path / f's{flush}.sqlite'}"
            if backend == "sqlite"
            else request.getfixturevalue("pg_cluster").create_database(f"flush_{flush}_{id(path)}")
        )
        with open_store(url, initialise=True) as store:
            ingest_ndjson(store, [path], batch=4)
            stored.append(rollup_tables(store))
    assert stored[0] == stored[1] and all(len(rows) > 3 for rows in stored[0])


def test_ndjson_ingest_is_unsigned_and_idempotent(
    backend_url: str, tmp_path: Path, records: list[dict[str, Any]]
) -> None:
    path = write_ndjson(tmp_path / "obs.ndjson", records)
    with open_store(backend_url, initialise=True) as store:
        first = ingest_ndjson(store, [path], batch=7)
        assert first.records_stored == len(records)
        assert first.chunks_stored == -(-len(records) // 7)
        again = ingest_ndjson(store, [path], batch=7)
        assert again.records_stored == 0 and again.chunks_already_stored == first.chunks_stored
        stored = next(iter(store.iter_records()))
        provenance = store.provenance(stored.chain_id, stored.sequence)
        assert provenance is not None and not provenance.signed
        assert provenance.collector_key_ids == ()
        assert stored.chain_id.startswith("ndjson-")


def test_ndjson_bad_line_stores_nothing(
    run_cli: Any, tmp_path: Path, records: list[dict[str, Any]]
) -> None:
    path = write_ndjson(tmp_path / "obs.ndjson", records)
    with path.open("a") as handle:
        handle.write('{"node_hash": "sha256:00", "function_name": "f", "observed_at": "x"}\n')
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    done = run_cli("observations", "ingest", path, "--store", url)
    assert done.exit_code == 2
    assert f"obs.ndjson:{len(records) + 1}: field 'node_hash'" in done.stderr
    with open_store(url) as store:
        assert store.status().records == 0


def test_memory_store_is_bounded_and_counts_what_it_drops(
    tmp_path: Path, records: list[dict[str, Any]]
) -> None:
    path = write_ndjson(tmp_path / "obs.ndjson", records)
    store = MemoryStore("memory://?max_records=10")
    result = ingest_ndjson(store, [path], batch=4)
    assert (result.records_stored, result.records_dropped) == (10, len(records) - 10)
    status = store.status()
    assert (status.records, status.records_dropped) == (10, len(records) - 10)
    # The chunks are recorded: offering them again neither stores nor drops anything.
    again = ingest_ndjson(store, [path], batch=4)
    assert (again.records_stored, again.records_dropped) == (0, 0)


def test_store_urls_and_config(tmp_path: Path, run_cli: Any) -> None:
    from stella_bundle.errors import ConfigError
    from stella_bundle.store.config import redact, store_settings

    assert redact("postgresql://u:secret@h:5/db") == "postgresql://u:***@h:5/db"
    config = tmp_path / "stellaops.yaml"
    config.write_text(
        "runtime_agent:\n  observation_store:\n    type: sqlite\n    path: /tmp/x.sqlite\n"
        "    retention_hours: 24\n    max_batch_size: 500\n"
    )
    settings = store_settings(None, config)
    assert (settings.url, settings.retention_hours, settings.max_batch_size) == (
        "sqlite:////tmp/x.sqlite",
        24,
        500,
    )
    assert store_settings("memory://", config).url == "memory://"
    assert store_settings(None, None).url == "sqlite:///stella-observations.sqlite"
    config.write_text("observation_store:\n  type: valkey\n")
    with pytest.raises(ConfigError, match=r"observation_store.type.*valkey is not built"):
        store_settings(None, config)
    config.write_text("observation_store:\n  type: postgres\n")
    with pytest.raises(ConfigError, match="needs url"):
        store_settings(None, config)
    # Settings that would be ignored are refused, naming the key (each was silently dropped).
    for text, field, words in (
        (
            "observation_store:\n  path: /a.sqlite\n"
            "runtime_agent:\n  observation_store:\n    path: /b.sqlite\n",
            "runtime_agent.observation_store",
            ":4:3: field 'runtime_agent.observation_store': given twice, here and at "
            "observation_store: keep one",
        ),
        (
            "observation_store:\n  url: sqlite:////a.sqlite\n  path: /b.sqlite\n",
            "observation_store.path",
            ":3:9: field 'observation_store.path': path names a sqlite file: give url or path, "
            "not both",
        ),
        (
            "observation_store:\n  type: memory\n  path: /b.sqlite\n",
            "observation_store.path",
            ":3:9: field 'observation_store.path': path is for type sqlite, not memory",
        ),
    ):
        config.write_text(text)
        with pytest.raises(ConfigError) as refused:
            store_settings(None, config)
        assert refused.value.field == field, refused.value
        done = run_cli("observations", "query", "--config", config)
        assert done.exit_code == 2, done.stderr
        assert done.stderr.strip() == f"error: {config}{words}", done.stderr
    done = run_cli("store", "status", "--store", "mysql://x")
    assert done.exit_code == 2 and "unsupported store URL" in done.stderr
    missing = run_cli("observations", "query", "--store", f"sqlite:///{tmp_path / 'no.sqlite'}")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    status = run_cli("store", "status", "--store", f"sqlite:///{tmp_path / 'no.sqlite'}")
    assert status.exit_code == 2 and "schema_version: 0" in status.stdout
    assert not (tmp_path / "no.sqlite").exists()
    url = f"sqlite:///{tmp_path / 'yes.sqlite'}"
    assert "initialised at schema version 6" in run_cli("store", "init", "--store", url).stdout
    assert "already initialised" in run_cli("store", "init", "--store", url).stdout
    assert run_cli("store", "status", "--store", url).exit_code == 0


def test_sqlite_migrations_on_a_store_with_data(
    tmp_path: Path, run_cli: Any, monkeypatch: pytest.MonkeyPatch, records: list[dict[str, Any]]
) -> None:
    """A version-1 SQLite store holding records is migrated to the latest version: migrations
    3, 4 and 5 roll the stored rows up exactly as an ingest at that version does (every
    ten-minute bucket rolled up), and the coverage answers (whole store, and windows with
    ragged edges) are those before the migration."""
    from stella_bundle.store import rollups, sqlite

    path = tmp_path / "obs.ndjson"
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records))
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    windows = [
        ("2026-01-20T10:30:00.000000Z", "2026-01-21T07:15:00.500000Z"),
        ("2026-01-20T10:35:00.000000Z", "2026-01-20T10:44:59.999999Z"),
        ("2026-01-21T03:20:00.000000Z", None),
    ]
    with monkeypatch.context() as patch:
        patch.setattr(sqlite, "MIGRATIONS", sqlite.MIGRATIONS[:1])
        patch.setattr(sqlite, "LATEST", 1)
        with open_store(url, initialise=True) as store:
            patch.setattr(sqlite, "Rollups", NoRollups)
            ingest_ndjson(store, [path], batch=9)
            assert store.schema_version() == 1
        # What version 1 answered: the raw rows grouped by node.
        memory = MemoryStore()
        ingest_ndjson(memory, [path], batch=9)
        before = [memory.aggregate_nodes(), *(memory.aggregate_nodes(*w) for w in windows)]
    old = run_cli("observations", "query", "--store", url)
    assert old.exit_code == 2 and "store migrate" in old.stderr
    migrated = run_cli("store", "migrate", "--store", url, "--format", "json")
    assert json.loads(migrated.stdout)["applied"] == [2, 3, 4, 5, 6]
    fresh_url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    with open_store(fresh_url, initialise=True) as fresh:
        monkeypatch.setattr(rollups, "DENSE", 0)
        ingest_ndjson(fresh, [path], batch=9)
        built = rollup_tables(fresh)
    with open_store(url) as store:
        assert rollup_tables(store) == built and all(built)
        after = [store.aggregate_nodes(), *(store.aggregate_nodes(*w) for w in windows)]

    def normalised(answer: Any) -> Any:  # groups come in another order; types are a set
        rows = sorted(
            (r.node_hash, r.count, r.first, r.last, sorted(r.probe_types), r.function_name, r.purl)
            for r in answer.rows
        )
        return rows, answer.records_total, answer.records_in_window

    assert [normalised(a) for a in after] == [normalised(b) for b in before]


def test_chunks_the_fast_reader_refuses_take_the_full_path(
    backend_url: str, tmp_path: Path, test_keys: Any, records: list[dict[str, Any]]
) -> None:
    """Offsets and nanoseconds are valid but not canonical: those chunks are read line by line
    (validate_record), and the answers are still the file path's."""
    from stella_bundle.coverage.inputs import iter_evidence_records
    from stella_bundle.coverage.query import QueryFilter, filter_records, summarise
    from stella_bundle.store import query_records, query_summary

    odd = [dict(r) for r in records]
    for index, record in enumerate(odd):
        if index % 3 == 0:
            record["observed_at"] = record["observed_at"].replace(".000000Z", ".000000123+00:00")
        if index % 3 == 1:
            record["observed_at"] = record["observed_at"].replace("Z", "-00:00")
    chain = write_chain(tmp_path / "e", "chain-o", odd, test_keys.signer("collector"))
    root = TrustRoot.load(test_keys.trust_root)
    with open_store(backend_url, initialise=True) as store:
        assert ingest_evidence(store, chain, root).records_stored == len(odd)
        selection = QueryFilter(window_from="2026-01-20T12:00:00.000000Z")
        from_files = list(filter_records(iter_evidence_records(chain), selection))
        assert list(query_records(store, selection)) == from_files
        assert [s.to_dict() for s in query_summary(store, selection)] == [
            s.to_dict() for s in summarise(from_files)
        ]


def test_commands_take_the_store_from_stellaops_yaml(
    tmp_path: Path, records: list[dict[str, Any]], run_cli: Any
) -> None:
    """`observation_store:` names the store and its retention when --store is not given."""
    db = tmp_path / "configured.sqlite"
    config = tmp_path / "stellaops.yaml"
    config.write_text(
        f"observation_store:\n  type: sqlite\n  path: {db}\n  retention_hours: 24\n"
        "  max_batch_size: 5\n"
    )
    path = write_ndjson(tmp_path / "obs.ndjson", records)
    done = run_cli("observations", "ingest", path, "--config", config, "--format", "json")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["chunks_stored"] == -(-len(records) // 5)
    assert db.exists()
    files = run_cli(
        "observations", "query", "--observations", path, "--summary", "--format", "json"
    )
    stored = run_cli("observations", "query", "--config", config, "--summary", "--format", "json")
    assert stored.exit_code == 0 and stored.stdout == files.stdout
    # Retention from the file: every record (January 2026) is older than 24 hours.
    pruned = run_cli("observations", "prune", "--config", config, "--format", "json")
    assert pruned.exit_code == 0 and json.loads(pruned.stdout)["records_removed"] == len(records)


def test_a_chunk_changed_after_verification_is_refused(
    tmp_path: Path, test_keys: Any, records: list[dict[str, Any]]
) -> None:
    """What is stored is what was verified: the chunks are checked against their seals again
    when they are read for storing."""
    from stella_bundle.store.ingest import chain_chunks, verify_chains

    root = TrustRoot.load(test_keys.trust_root)
    chain = write_chain(tmp_path / "e", "chain-t", records, test_keys.signer("collector"))
    verified = verify_chains(chain, root)
    other = write_chain(tmp_path / "f", "chain-t", records[::-1], test_keys.signer("collector"))
    (chain / "0000000002.ndjson.zst").write_bytes((other / "0000000002.ndjson.zst").read_bytes())
    with pytest.raises(EvidenceChainError, match="changed after it was verified"):
        list(chain_chunks(verified[0]))


def test_sealed_lines_with_escapes_come_back_as_sealed(
    backend_url: str, tmp_path: Path, test_keys: Any
) -> None:
    """Chunks the fast path decodes: plain ones (formatted for COPY from their columns), ones
    whose lines hold backslashes (COPY's escape character, written escaped) and ones without
    purl (NULL): records and columns come back as sealed, in store order."""
    node = "sha256:" + "ab" * 32
    records: list[dict[str, Any]] = []
    for index in range(30):
        record: dict[str, Any] = {
            "node_hash": node,
            "function_name": f"f{index}",
            "observed_at": f"2026-01-20T00:00:{index:02d}.000000Z",
            "probe_type": "uprobe",
            "purl": "pkg:deb/debian/openssl@3.0.11",
        }
        if 10 <= index < 20:  # the second chunk: escapes COPY's text format must keep
            record["function_name"] = f"f\\t{index}\\N\\\\"
            record["comm"] = "a\tb\nc"
        if index >= 20:  # the third chunk: no purl
            del record["purl"]
        records.append(record)
    chain = write_chain(tmp_path / "e", "chain-esc", records, test_keys.signer("collector"))
    with open_store(backend_url, initialise=True) as store:
        stored = ingest_evidence(store, chain.parent, TrustRoot.load(test_keys.trust_root))
        assert (stored.chunks_stored, stored.records_stored) == (3, 30)
        assert [r.record for r in store.iter_records()] == records
        if not isinstance(store, MemoryStore):
            columns = store.db.execute(  # type: ignore[attr-defined]
                "SELECT line, function_name, purl FROM observations ORDER BY sequence, line"
            ).fetchall()
            assert [tuple(c) for c in columns] == [
                (i % 10 + 1, r["function_name"], r.get("purl")) for i, r in enumerate(records)
            ]
