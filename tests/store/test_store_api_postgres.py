"""The API over PostgreSQL (issue 11, faults): the server stopped in the middle of an upload's
COPY answers 503 naming the store, nothing of the upload is kept, and the retry completes."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from store_support import make_map, observations, write_chain

from stella_bundle.api import ApiSettings, create_app
from stella_bundle.evidence.layout import chunk_name, seal_name
from stella_bundle.formats.trust_root import TrustRoot
from stella_bundle.store import open_store
from stella_bundle.store.postgres import PostgresStore


def _upload(chain: Path) -> dict[str, Any]:
    chunks = []
    sequence = 1
    while (chain / seal_name(sequence)).exists():
        chunks.append(
            {
                "sequence": sequence,
                "chunk": base64.b64encode((chain / chunk_name(sequence)).read_bytes()).decode(),
                "seal": base64.b64encode((chain / seal_name(sequence)).read_bytes()).decode(),
            }
        )
        sequence += 1
    return {"chains": [{"chain_id": chain.name, "chunks": chunks}]}


def test_api_postgres_stopped_mid_ingest_is_503_then_retry_completes(
    pg_cluster: Any, pg_url: str, test_keys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_store(pg_url, initialise=True).close()
    records = observations(make_map(), days=3)
    body = _upload(write_chain(tmp_path / "ev", "chain-pg", records, test_keys.signer("collector")))
    settings = ApiSettings(pg_url, TrustRoot.load(test_keys.trust_root), work_dir=tmp_path)
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    original = PostgresStore._copy_write
    writes: list[int] = []

    def copy_then_stop(self: PostgresStore, copy: Any, data: bytes) -> None:
        writes.append(len(data))
        if len(writes) == 2:
            pg_cluster.stop("fast")  # the COPY has begun: the server goes away
        original(self, copy, data)

    monkeypatch.setattr(PostgresStore, "_copy_write", copy_then_stop)
    try:
        failed = client.post("/api/v1/evidence", json=body)
        assert failed.status_code == 503, failed.text
        assert failed.json()["detail"].startswith(
            f"store unavailable: store {pg_url}: ingest interrupted, nothing written"
        )
        assert len(writes) >= 2  # stopped in the middle of the COPY
        down = client.get("/readyz")
        assert down.status_code == 503 and pg_url in down.json()["detail"]
        assert client.get("/api/v1/function-maps").status_code == 503
    finally:
        monkeypatch.setattr(PostgresStore, "_copy_write", original)
        pg_cluster.start()
    with open_store(pg_url) as store:
        assert (store.status().records, store.status().chunks) == (0, 0)  # rolled back
    assert client.get("/readyz").status_code == 200
    retried = client.post("/api/v1/evidence", json=body)
    assert retried.status_code == 201, retried.text
    assert retried.json()["records_stored"] == len(records)
    again = client.post("/api/v1/evidence", json=body)
    assert again.status_code == 200 and again.json()["records_stored"] == 0
    with open_store(pg_url) as store:
        assert store.status().records == len(records)


def test_api_pooled_connection_outlives_a_postgres_restart(
    pg_cluster: Any, pg_url: str, test_keys: Any, tmp_path: Path
) -> None:
    """The API keeps stores open between requests; a connection the server closed (a
    restart while the API was idle) is found out before a request uses it: no 503 for a
    store that is up. A failure empties the pool: the retry after it opens afresh."""
    open_store(pg_url, initialise=True).close()
    settings = ApiSettings(pg_url, TrustRoot.load(test_keys.trust_root), work_dir=tmp_path)
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    assert client.get("/api/v1/function-maps").status_code == 200  # a connection is pooled
    pg_cluster.stop("fast")
    pg_cluster.start()
    for _ in range(3):
        answer = client.get("/api/v1/function-maps")
        assert answer.status_code == 200, answer.text
    pg_cluster.stop("fast")
    try:
        assert client.get("/api/v1/function-maps").status_code == 503
    finally:
        pg_cluster.start()
    assert client.get("/api/v1/function-maps").status_code == 200
