"""The Tetragon bridge's endpoints (issue 12): runtime traces posted and sealed, then in the
timeline and hot symbols; the null service when the bridge is off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stella_bundle.api import ApiSettings, create_app
from stella_bundle.evidence.chain import verify_chain
from stella_bundle.tetragon.config import TetragonConfig
from stella_bundle.tetragon.service import runtime_trace_service

REPO = Path(__file__).resolve().parents[2]
# Real events exported by Tetragon (its repository's test data, see PROVENANCE there).
EVENTS = REPO / "tests" / "data" / "external" / "tetragon" / "examples" / "events.json"
LINES = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
def bridge(api_env: Any, test_keys: Any, tmp_path: Path) -> Iterator[tuple[TestClient, Any]]:
    settings = ApiSettings(
        store_url=api_env.store_url,
        trust_root=api_env.settings.trust_root,
        tokens=api_env.settings.tokens,
        runtime=runtime_trace_service(tmp_path / "bridge"),
        runtime_signer=test_keys.signer("collector"),
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, settings


def test_posted_traces_are_sealed_and_queryable(bridge: Any, api_env: Any, test_keys: Any) -> None:
    client, settings = bridge
    posted = client.post(
        "/api/v1/runtime-traces?chain_id=bridge-1",
        content=EVENTS.read_bytes(),
        headers={**api_env.auth("write"), **LINES},
    )
    assert posted.status_code == 201, posted.text
    result = posted.json()["result"]
    assert posted.json()["enabled"] is True
    assert result["lines"] == 3 and result["records"] + sum(result["dropped"].values()) == 3
    assert result["records"] >= 1
    # Sealed with the bridge's collector key: the chain verifies against the trust root.
    report = verify_chain(Path(result["chain_dir"]), test_keys.trust_root)
    assert report.passed and report.records == result["records"]
    timeline = client.get("/api/v1/runtime/timeline", headers=api_env.auth("read")).json()
    assert timeline["enabled"] is True and len(timeline["events"]) == result["records"]
    times = [event["observed_at"] for event in timeline["events"]]
    assert times == sorted(times)
    assert timeline["events"] == settings.runtime.timeline(limit=1000).to_dict()["events"]
    hot = client.get(
        "/api/v1/runtime/hot-symbols?window_seconds=60", headers=api_env.auth("read")
    ).json()
    assert sum(s["count"] for s in hot["symbols"]) == result["records"]
    assert hot["window_seconds"] == 60 and hot["windows"]
    # A second post goes on in the same chain.
    again = client.post(
        "/api/v1/runtime-traces?chain_id=bridge-1",
        content=EVENTS.read_bytes(),
        headers={**api_env.auth("write"), **LINES},
    )
    assert again.status_code == 201
    assert verify_chain(Path(result["chain_dir"]), test_keys.trust_root).passed
    events = client.get("/api/v1/runtime/timeline", headers=api_env.auth("read")).json()["events"]
    assert len(events) == 2 * result["records"]


def test_hostile_lines_are_counted_never_a_500(bridge: Any, api_env: Any) -> None:
    client, _ = bridge
    body = b'not json\n{"process_unknown_kind": {}}\n{"process_exec": 5}\n\xff\xfe\n'
    answer = client.post(
        "/api/v1/runtime-traces", content=body, headers={**api_env.auth("write"), **LINES}
    )
    assert answer.status_code in (201, 422), answer.text
    if answer.status_code == 201:
        result = answer.json()["result"]
        assert (
            result["records"] == 0
            and sum(result["dropped"].values()) + len(result["problems"]) >= 1
        )


def test_null_service_answers_empty(api_env: Any, tmp_path: Path) -> None:
    client = api_env.client  # no --tetragon-evidence: the null service
    posted = client.post(
        "/api/v1/runtime-traces",
        content=EVENTS.read_bytes(),
        headers={**api_env.auth("write"), **LINES},
    )
    assert posted.status_code == 200 and posted.json()["enabled"] is False
    assert posted.json()["result"]["records"] == 0
    assert client.get("/api/v1/runtime/timeline", headers=api_env.auth("read")).json() == {
        "events": [],
        "enabled": False,
    }
    hot = client.get("/api/v1/runtime/hot-symbols", headers=api_env.auth("read")).json()
    assert hot["symbols"] == [] and hot["enabled"] is False


def test_disabled_by_config_is_the_null_service(
    api_env: Any, tmp_path: Path, test_keys: Any
) -> None:
    settings = ApiSettings(
        store_url=api_env.store_url,
        trust_root=api_env.settings.trust_root,
        runtime=runtime_trace_service(tmp_path / "off", TetragonConfig(enabled=False)),
        runtime_signer=test_keys.signer("collector"),
    )
    with TestClient(create_app(settings)) as client:
        posted = client.post("/api/v1/runtime-traces", content=EVENTS.read_bytes(), headers=LINES)
        assert posted.status_code == 200 and posted.json()["enabled"] is False
    assert not (tmp_path / "off").exists()  # nothing written


def test_enabled_without_a_key_is_503(api_env: Any, tmp_path: Path) -> None:
    settings = ApiSettings(
        store_url=api_env.store_url,
        trust_root=api_env.settings.trust_root,
        runtime=runtime_trace_service(tmp_path / "b"),
    )
    with TestClient(create_app(settings)) as client:
        answer = client.post("/api/v1/runtime-traces", content=EVENTS.read_bytes(), headers=LINES)
        assert answer.status_code == 503 and "--tetragon-key" in answer.json()["detail"]
