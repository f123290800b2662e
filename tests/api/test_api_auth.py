"""Bearer tokens and scopes (401/403), the body limit (413), tokens stored hashed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from api_support import records, statement, statement_bytes

from stella_bundle.api import TokenFile
from stella_bundle.errors import ConfigError

WRITE_ENDPOINTS = (
    ("POST", "/api/v1/function-maps"),
    ("POST", "/api/v1/evidence"),
    ("POST", "/api/v1/runtime-traces"),
    ("POST", "/api/v1/function-maps/" + "a" * 64 + "/verify"),
)
READ_ENDPOINTS = (
    "/api/v1/function-maps",
    "/api/v1/observations",
    "/api/v1/runtime/hot-symbols",
    "/api/v1/runtime/timeline",
    "/metrics",
    "/api/v1/function-maps/" + "a" * 64 + "/coverage",
)


@pytest.mark.parametrize("path", READ_ENDPOINTS)
def test_no_token_is_401_with_a_bearer_challenge(api_env: Any, path: str) -> None:
    answer = api_env.client.get(path)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json() == {"detail": "a bearer token is required"}
    wrong = api_env.client.get(path, headers={"Authorization": "Bearer stella_not-a-token"})
    assert wrong.status_code == 401
    assert "not known" in wrong.json()["detail"]
    basic = api_env.client.get(path, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401


@pytest.mark.parametrize(("method", "path"), WRITE_ENDPOINTS)
def test_read_token_on_a_write_endpoint_is_403(api_env: Any, method: str, path: str) -> None:
    answer = api_env.client.request(method, path, json={}, headers=api_env.auth("read"))
    assert answer.status_code == 403
    assert answer.json()["detail"] == "token 't-read' lacks the 'write' scope this operation needs"
    assert api_env.client.request(method, path, json={}).status_code == 401


def test_scopes_are_ordered(api_env: Any) -> None:
    body = statement_bytes(statement(3))
    for scope, expected in (("read", 403), ("write", 201), ("admin", 200)):
        answer = api_env.client.post(
            "/api/v1/function-maps", content=body, headers=api_env.auth(scope)
        )
        assert answer.status_code == expected, (scope, answer.text)
    assert (
        api_env.client.get("/api/v1/store/status", headers=api_env.auth("write")).status_code == 403
    )
    status = api_env.client.get("/api/v1/store/status", headers=api_env.auth("admin"))
    assert status.status_code == 200 and status.json()["function_maps"] == 1


def test_health_needs_no_token(api_env: Any) -> None:
    assert api_env.client.get("/healthz").json() == {"status": "ok"}
    ready = api_env.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["backend"] == "sqlite"


def test_oversized_body_is_413_before_anything_is_stored(api_env: Any) -> None:
    limit = api_env.settings.max_body_bytes
    big = {"records": records(1, 1) * (limit // 200 + 10)}
    data = json.dumps(big).encode()
    assert len(data) > limit
    answer = api_env.client.post(
        "/api/v1/evidence",
        content=data,
        headers={**api_env.auth("write"), "Content-Type": "application/json"},
    )
    assert answer.status_code == 413
    assert (
        answer.json()["detail"] == f"request body larger than the server's limit of {limit} bytes"
    )

    # Without Content-Length (chunked upload): counted as read, refused at the limit.
    def chunks() -> Any:
        for start in range(0, len(data), 65536):
            yield data[start : start + 65536]

    streamed = api_env.client.post(
        "/api/v1/evidence",
        content=chunks(),
        headers={**api_env.auth("write"), "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413
    # Also without a token: the limit comes first, nothing of the body is parsed.
    assert api_env.client.post("/api/v1/evidence", content=data).status_code == 413
    status = api_env.client.get("/api/v1/store/status", headers=api_env.auth("admin")).json()
    assert status["records"] == 0


def test_tokens_file_keeps_hashes_only(api_env: Any) -> None:
    text = api_env.tokens_path.read_text()
    for token in api_env.tokens.values():
        assert token not in text
    assert oct(api_env.tokens_path.stat().st_mode & 0o777) == "0o600"
    loaded = TokenFile.load(api_env.tokens_path)
    assert [e.name for e in loaded.entries] == ["t-read", "t-write", "t-admin"]
    assert loaded.authenticate(api_env.tokens["write"]).name == "t-write"  # type: ignore[union-attr]
    assert loaded.authenticate(api_env.tokens["write"] + "x") is None


def test_tokens_file_errors_name_the_field(tmp_path: Any) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps({"version": 1, "tokens": [{"name": "a", "sha256": "00", "scopes": ["read"]}]})
    )
    with pytest.raises(ConfigError, match=r"tokens\[0\]\.sha256"):
        TokenFile.load(path)
    path.write_text(
        json.dumps(
            {"version": 1, "tokens": [{"name": "a", "sha256": "0" * 64, "scopes": ["root"]}]}
        )
    )
    with pytest.raises(ConfigError, match=r"tokens\[0\]\.scopes.*unknown scope 'root'"):
        TokenFile.load(path)
    tokens = TokenFile(path=path)
    tokens.add("a", ["read"])
    with pytest.raises(ConfigError, match="exists already"):
        tokens.add("a", ["write"])
