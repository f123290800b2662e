"""schemas/openapi.json is what the server publishes at /openapi.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stella_bundle.api.openapi import openapi_bytes

COMMITTED = Path(__file__).resolve().parents[2] / "schemas" / "openapi.json"


def test_committed_openapi_equals_the_served_one(api_env: Any) -> None:
    served = api_env.client.get("/openapi.json")
    assert served.status_code == 200
    committed = json.loads(COMMITTED.read_text())
    assert served.json() == committed, "schemas/openapi.json is stale: run `just openapi`"
    assert openapi_bytes() == COMMITTED.read_bytes(), "run `just openapi`"


def test_every_endpoint_is_documented_with_its_errors() -> None:
    document = json.loads(COMMITTED.read_text())
    operations = {
        (method.upper(), path): spec
        for path, methods in document["paths"].items()
        for method, spec in methods.items()
    }
    assert set(operations) == {
        ("POST", "/api/v1/function-maps"),
        ("GET", "/api/v1/function-maps"),
        ("GET", "/api/v1/function-maps/{map_id}"),
        ("POST", "/api/v1/function-maps/{map_id}/verify"),
        ("GET", "/api/v1/function-maps/{map_id}/coverage"),
        ("POST", "/api/v1/evidence"),
        ("GET", "/api/v1/observations"),
        ("GET", "/api/v1/runtime/hot-symbols"),
        ("GET", "/api/v1/runtime/timeline"),
        ("POST", "/api/v1/runtime-traces"),
        ("GET", "/api/v1/store/status"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
    }
    for key, spec in operations.items():
        if key[1] not in ("/healthz", "/readyz"):
            assert {"401", "403", "413", "422", "503"} <= set(spec["responses"]), key
            assert spec["security"] == [{"HTTPBearer": []}], key
