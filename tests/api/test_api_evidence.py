"""POST /api/v1/evidence: verified before stored, idempotent, conflicts refused; queries; 503."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from api_support import chain_upload, records, write_chain

from stella_bundle.store import open_store


def _status(api_env: Any) -> dict[str, Any]:
    answer = api_env.client.get("/api/v1/store/status", headers=api_env.auth("admin"))
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_sealed_chain_verified_stored_signed_and_idempotent(
    api_env: Any, test_keys: Any, tmp_path: Path
) -> None:
    items = records(230, 10)
    chain = write_chain(tmp_path / "ev", "chain-a", items, test_keys.signer("collector"))
    body = {"chains": [chain_upload(chain)]}
    first = api_env.client.post("/api/v1/evidence", json=body, headers=api_env.auth("write"))
    assert first.status_code == 201, first.text
    stored = first.json()
    assert stored["signed"] is True
    assert stored["records_stored"] == len(items) and stored["chunks_stored"] == len(
        body["chains"][0]["chunks"]
    )
    assert stored["chains"][0]["chain_id"] == "chain-a"
    again = api_env.client.post("/api/v1/evidence", json=body, headers=api_env.auth("write"))
    assert again.status_code == 200
    assert (again.json()["records_stored"], again.json()["chunks_already_stored"]) == (
        0,
        stored["chunks_stored"],
    )
    assert _status(api_env)["records"] == len(items)
    with open_store(api_env.store_url) as store:
        provenance = store.provenance("chain-a", 1)
        assert provenance is not None and provenance.signed and provenance.collector_key_ids
    # Queried back in store order, with the same filters as the CLI.
    answer = api_env.client.get("/api/v1/observations?limit=5", headers=api_env.auth("read")).json()
    assert answer["truncated"] is True and answer["records"] == items[:5]
    summary = api_env.client.get(
        "/api/v1/observations?summary=true&symbol=fn_3", headers=api_env.auth("read")
    ).json()
    assert [(s["function_name"], s["records"]) for s in summary["symbols"]] == [("fn_3", 23)]


def test_unsigned_records_are_stored_marked_unsigned(api_env: Any) -> None:
    items = records(40, 4)
    first = api_env.client.post(
        "/api/v1/evidence", json={"records": items}, headers=api_env.auth("write")
    )
    assert first.status_code == 201 and first.json()["signed"] is False
    again = api_env.client.post(
        "/api/v1/evidence", json={"records": items}, headers=api_env.auth("write")
    )
    assert again.status_code == 200 and again.json()["records_stored"] == 0
    with open_store(api_env.store_url) as store:
        chains = {s.chain_id for s in store.iter_records()}
        assert len(chains) == 1
        provenance = store.provenance(chains.pop(), 1)
        assert provenance is not None and provenance.signed is False


def test_refused_evidence_stores_nothing(api_env: Any, test_keys: Any, tmp_path: Path) -> None:
    items = records(120, 6)
    auth = api_env.auth("write")
    # Sealed by a key the trust root does not know.
    stranger = write_chain(tmp_path / "s", "chain-s", items, test_keys.signer("stranger"))
    answer = api_env.client.post(
        "/api/v1/evidence", json={"chains": [chain_upload(stranger)]}, headers=auth
    )
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("verification failed, nothing stored:")
    assert "chain chain-s failed verification" in answer.json()["detail"]
    # A chunk altered after sealing.
    good = write_chain(tmp_path / "g", "chain-g", items, test_keys.signer("collector"))
    body = chain_upload(good)
    chunk = bytearray(base64.b64decode(body["chunks"][1]["chunk"]))
    chunk[-5] ^= 1
    body["chunks"][1]["chunk"] = base64.b64encode(bytes(chunk)).decode()
    answer = api_env.client.post("/api/v1/evidence", json={"chains": [body]}, headers=auth)
    assert answer.status_code == 422, answer.text
    # Malformed uploads: one line naming the field.
    for bad, where in (
        (
            {
                "chains": [
                    {"chain_id": "../x", "chunks": [{"sequence": 1, "chunk": "", "seal": ""}]}
                ]
            },
            "chain_id",
        ),
        ({"chains": [], "records": []}, "chains"),
        ({}, "exactly one"),
        ({"records": [{"node_hash": "x"}]}, "<request body>:1:"),
        (
            {"chains": [{"chain_id": "c", "chunks": [{"sequence": 1, "chunk": "@@", "seal": ""}]}]},
            "chunk",
        ),
    ):
        answer = api_env.client.post("/api/v1/evidence", json=bad, headers=auth)
        assert answer.status_code == 422, (bad, answer.text)
        assert where in json.dumps(answer.json()), (where, answer.text)
    assert _status(api_env)["records"] == 0


def test_conflicting_chunk_is_409_and_nothing_stored(
    api_env: Any, test_keys: Any, tmp_path: Path
) -> None:
    signer = test_keys.signer("collector")
    items = records(100, 5)
    first = write_chain(tmp_path / "one", "chain-x", items, signer)
    other = write_chain(tmp_path / "two", "chain-x", items[::-1], signer)
    auth = api_env.auth("write")
    assert (
        api_env.client.post(
            "/api/v1/evidence", json={"chains": [chain_upload(first)]}, headers=auth
        ).status_code
        == 201
    )
    refused = api_env.client.post(
        "/api/v1/evidence", json={"chains": [chain_upload(other)]}, headers=auth
    )
    assert refused.status_code == 409
    assert "conflicting chunk, nothing stored: chain chain-x sequence 1" in refused.json()["detail"]
    assert _status(api_env)["records"] == len(items)


def test_store_down_is_503_naming_the_store(api_env: Any) -> None:
    path = Path(api_env.store_url.removeprefix("sqlite:///"))
    aside = path.with_suffix(".aside")
    os.rename(path, aside)
    try:
        for method, url, kwargs in (
            ("GET", "/api/v1/function-maps", {}),
            ("GET", "/api/v1/observations", {}),
            ("POST", "/api/v1/evidence", {"json": {"records": records(2, 2)}}),
        ):
            answer = api_env.client.request(method, url, headers=api_env.auth("admin"), **kwargs)
            assert answer.status_code == 503, answer.text
            assert answer.json()["detail"].startswith(
                f"store unavailable: store {api_env.store_url}"
            )
        ready = api_env.client.get("/readyz")
        assert ready.status_code == 503 and str(path) in ready.json()["detail"]
        # Not a database at all: the same answer.
        path.write_bytes(b"not a database" * 100)
        answer = api_env.client.get("/api/v1/function-maps", headers=api_env.auth("read"))
        assert answer.status_code == 503 and "store unavailable" in answer.json()["detail"]
    finally:
        os.replace(aside, path)
    assert api_env.client.get("/readyz").status_code == 200
    metrics = api_env.client.get("/metrics", headers=api_env.auth("read")).text
    assert "stella_api_store_unavailable_total 5.0" in metrics
