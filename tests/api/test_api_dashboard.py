"""The coverage dashboard: self-contained pages, login cookie, rendered by headless Chromium
from a real server (screenshot and DOM)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from api_support import chain_upload, records, signed_bytes, statement, write_chain
from chromium_support import page_problems, run_chromium
from server_support import Server

from stella_bundle.api.dashboard import CONTENT_SECURITY_POLICY

HOSTILE = "<script>alert(1)</script>"
PATHS = 15
SKIPPED = 3  # api/0000 … api/0002 are never observed


def _seed(client: Any, auth: dict[str, str], test_keys: Any, tmp_path: Path) -> str:
    envelope = signed_bytes(statement(PATHS), test_keys.signer("function-map"))
    digest: str = client.post("/api/v1/function-maps", content=envelope, headers=auth).json()[
        "digest"
    ]
    items = records(300, PATHS, skip=SKIPPED, day=23) + records(
        150, PATHS, skip=SKIPPED + 4, day=24
    )
    items.append(
        {
            "node_hash": "sha256:" + "e" * 64,
            "function_name": HOSTILE,
            "probe_type": "uprobe",
            "observed_at": "2026-01-24T10:00:00.000000Z",
        }
    )
    chain = write_chain(tmp_path / "ev", "chain-ui", items, test_keys.signer("collector"))
    assert (
        client.post(
            "/api/v1/evidence", json={"chains": [chain_upload(chain)]}, headers=auth
        ).status_code
        == 201
    )
    return digest


def _self_contained(page: str) -> None:
    assert not re.search(r"""(src|href|action)\s*=\s*["']?(https?:|//|file:|data:)""", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "@import" not in page and "url(" not in page


def test_dashboard_pages_and_login(api_env: Any, test_keys: Any, tmp_path: Path) -> None:
    client = api_env.client
    digest = _seed(client, api_env.auth("write"), test_keys, tmp_path)
    page = client.get(f"/ui/function-maps/{digest}?windows=6", headers=api_env.auth("read"))
    assert (
        page.status_code == 200
        and page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    )
    html = page.text
    _self_contained(html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # a symbol is text, never markup
    for index in range(SKIPPED):
        assert f"<li><code>api/{index:04d}</code></li>" in html
    assert html.count('class="bar"') == 5 and html.count("<circle") == 6
    # No token: the login page (401), not the data.
    anonymous = client.get(f"/ui/function-maps/{digest}")
    assert anonymous.status_code == 401 and 'action="/ui/login"' in anonymous.text
    assert "api/0000" not in anonymous.text
    refused = client.post(
        "/ui/login",
        content="token=stella_wrong",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert refused.status_code == 401 and "not known" in refused.text
    signed_in = client.post(
        "/ui/login",
        content=f"token={api_env.tokens['read']}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/ui/"
    cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    index = client.get("/ui/")  # the client keeps the cookie
    assert index.status_code == 200 and f"/ui/function-maps/{digest}" in index.text
    # The cookie opens the dashboard only, never the API.
    assert client.get("/api/v1/function-maps").status_code == 401
    assert client.post("/api/v1/evidence", json={"records": records(1, 1)}).status_code == 401


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_chromium(profile, *args, window="1100,2200", timeout=180)


def test_chromium_renders_the_dashboard_from_a_real_server(
    api_env: Any, test_keys: Any, tmp_path: Path
) -> None:
    digest = _seed(api_env.client, api_env.auth("write"), test_keys, tmp_path)
    # The same store served by a real uvicorn on loopback without tokens (the browser cannot
    # send a bearer header from the command line).
    server = Server("--trust-root", test_keys.trust_root, "--store", api_env.store_url)
    server.start()
    try:
        url = f"{server.url}/ui/function-maps/{digest}?windows=8"
        png = tmp_path / "dashboard.png"
        shot = _chromium(tmp_path / "profile", f"--screenshot={png}", url)
        assert shot.returncode == 0, shot.stderr[-2000:]
        dom = _chromium(tmp_path / "profile", "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-2000:]
    finally:
        server.stop()
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000  # charts, not a blank page
    html = dom.stdout
    assert re.search(r'id="verdict"[^>]*>(NOT )?VERIFIED<', html)
    for index in range(SKIPPED):
        assert f"api/{index:04d}" in html  # missing paths named
    for index in range(PATHS):
        assert f"api/{index:04d}" in html  # every path of the map listed
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and HOSTILE not in html
    assert html.count("<circle") == 8 and 'id="tags"' in html and 'id="target"' in html
    assert page_problems(shot.stderr, dom.stderr) == []
