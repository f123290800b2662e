"""API fixtures: a SQLite store, the session's trust root, tokens of each scope, the app."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stella_bundle.api import ApiSettings, TokenFile, create_app
from stella_bundle.formats.trust_root import TrustRoot
from stella_bundle.store import open_store


@dataclass
class ApiEnv:
    store_url: str
    tokens_path: Path
    tokens: dict[str, str]  # scope → token
    client: TestClient
    settings: ApiSettings

    def auth(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[scope]}"}


def make_tokens(path: Path) -> dict[str, str]:
    tokens = TokenFile(path=path)
    made = {scope: tokens.add(f"t-{scope}", [scope]) for scope in ("read", "write", "admin")}
    tokens.save()
    return made


@pytest.fixture
def api_env(tmp_path: Path, test_keys: Any) -> Iterator[ApiEnv]:
    url = f"sqlite:///{tmp_path / 'api.sqlite'}"
    open_store(url, initialise=True).close()
    tokens_path = tmp_path / "tokens.json"
    tokens = make_tokens(tokens_path)
    settings = ApiSettings(
        store_url=url,
        trust_root=TrustRoot.load(test_keys.trust_root),
        tokens=TokenFile.load(tokens_path),
        max_body_bytes=4 << 20,
        work_dir=tmp_path,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield ApiEnv(url, tokens_path, tokens, client, settings)
