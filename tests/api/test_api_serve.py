"""`stella serve` as a real uvicorn process: listen policy, TLS, tokens CLI, SIGKILL mid-ingest."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import chain_upload, records, write_chain
from server_support import Server

from stella_bundle.api.server import Listen, check_listen
from stella_bundle.errors import ConfigError
from stella_bundle.store import open_store


def test_listen_policy() -> None:
    assert check_listen(Listen("127.0.0.1", 1), has_tokens=True, insecure=False) == []
    assert check_listen(Listen("::1", 1), has_tokens=False, insecure=False)  # a warning only
    for host in ("0.0.0.0", "10.1.2.3", "::"):
        with pytest.raises(ConfigError, match=r"not loopback, needs TLS .* and bearer tokens"):
            check_listen(Listen(host, 1), has_tokens=False, insecure=False)
        assert check_listen(Listen(host, 1), has_tokens=False, insecure=True)


def test_serve_refuses_non_loopback_without_tls(
    run_cli: Any, test_keys: Any, tmp_path: Path
) -> None:
    result = run_cli(
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--trust-root",
        test_keys.trust_root,
        "--store",
        f"sqlite:///{tmp_path / 's.sqlite'}",
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: field '--listen': listening on 0.0.0.0, which is not loopback, needs TLS "
        "(--tls-cert, --tls-key) and bearer tokens (--tokens); or pass --insecure-listen"
    ]
    assert not (tmp_path / "s.sqlite").exists()  # nothing opened before the refusal
    no_root = run_cli("serve", "--store", f"sqlite:///{tmp_path / 's.sqlite'}")
    assert no_root.exit_code == 2 and "--trust-root" in no_root.stderr


def test_token_commands(run_cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    made = run_cli("serve", "token", "add", "--tokens", path, "--name", "ci", "--scope", "write")
    assert made.exit_code == 0
    token = made.stdout.strip()
    assert token.startswith("stella_") and token not in path.read_text()
    listed = run_cli("serve", "token", "list", "--tokens", path, "--format", "json")
    assert json.loads(listed.stdout)["tokens"][0]["scopes"] == ["write"]
    bad = run_cli("serve", "token", "add", "--tokens", path, "--name", "x", "--scope", "root")
    assert bad.exit_code == 2 and "unknown scope 'root'" in bad.stderr
    assert run_cli("serve", "token", "remove", "--tokens", path, "--name", "ci").exit_code == 0
    assert json.loads(path.read_text())["tokens"] == []


def _tls_pair(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.slow
def test_tls_tokens_and_several_workers_over_a_real_server(
    run_cli: Any, test_keys: Any, tmp_path: Path
) -> None:
    """TLS and bearer tokens, with `--workers 2`: the worker processes rebuild the app from the
    same options (one server for both: each start of the app took seconds)."""
    cert, key = _tls_pair(tmp_path)
    tokens = tmp_path / "tokens.json"
    made = run_cli("serve", "token", "add", "--tokens", tokens, "--name", "r", "--scope", "read")
    token = made.stdout.strip()
    writer = run_cli("serve", "token", "add", "--tokens", tokens, "--name", "w", "--scope", "write")
    write = {"Authorization": f"Bearer {writer.stdout.strip()}"}
    server = Server(
        "--trust-root", test_keys.trust_root, "--store", f"sqlite:///{tmp_path / 's.sqlite'}",
        "--tokens", tokens, "--tls-cert", cert, "--tls-key", key, "--workers", "2",
        tls_ca=cert,
    )  # fmt: skip
    server.start()
    tls = ssl.create_default_context(cafile=str(cert))
    try:
        listed = httpx.get(
            server.url + "/api/v1/function-maps",
            verify=tls,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert listed.status_code == 200 and listed.json() == {"function_maps": []}
        assert httpx.get(server.url + "/api/v1/function-maps", verify=tls).status_code == 401
        with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port: no answer
            httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        for _ in range(6):  # spread over both workers
            answer = httpx.post(
                server.url + "/api/v1/evidence",
                json={"records": records(5, 5)},
                headers=write,
                verify=tls,
                timeout=60,
            )
            assert answer.status_code in (200, 201), answer.text
        listed = httpx.get(
            server.url + "/api/v1/observations", headers=write, verify=tls, timeout=30
        ).json()
        assert len(listed["records"]) == 5  # stored once, whichever worker answered
    finally:
        server.stop()


@pytest.mark.slow
def test_sigkill_during_ingest_then_repeat(test_keys: Any, tmp_path: Path) -> None:
    """The server killed while it stores an upload, restarted, the upload repeated: every
    record exactly once (one store transaction per upload, idempotent per chunk)."""
    url = f"sqlite:///{tmp_path / 'kill.sqlite'}"
    signer = test_keys.signer("collector")
    chains = [
        write_chain(
            tmp_path / "ev", f"chain-{n}", records(1500, 50, day=20 + n), signer, per_chunk=30
        )
        for n in range(3)
    ]
    body = json.dumps({"chains": [chain_upload(c) for c in chains]}).encode()
    expected = Counter(
        json.dumps(r, sort_keys=True) for n in range(3) for r in records(1500, 50, day=20 + n)
    )
    args = ("--trust-root", test_keys.trust_root, "--store", url)
    killed_mid_request = False
    # The upload takes seconds to verify and store here; if it ever finished first, kill sooner.
    for delay in (0.3, 0.15, 0.05):
        server = Server(*args)
        server.start()
        outcome: dict[str, Any] = {}

        def post(server: Server = server, outcome: dict[str, Any] = outcome) -> None:
            try:
                outcome["status"] = httpx.post(
                    server.url + "/api/v1/evidence",
                    content=body,
                    headers={"Content-Type": "application/json"},
                    timeout=120,
                ).status_code
            except httpx.HTTPError as exc:
                outcome["error"] = exc

        client = threading.Thread(target=post)
        client.start()
        time.sleep(delay)
        server.kill()
        client.join(timeout=60)
        if "error" in outcome:
            killed_mid_request = True
            with open_store(url) as store:
                # All or nothing of the upload, never part of it.
                assert store.status().records in (0, sum(expected.values()))
            break
        # The upload finished before the kill: start over with an empty store.
        Path(url.removeprefix("sqlite:///")).unlink()
        for suffix in ("-wal", "-shm"):
            Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
    assert killed_mid_request, "the upload always finished before the kill"
    server = Server(*args)
    server.start()
    try:
        again = httpx.post(
            server.url + "/api/v1/evidence",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=300,
        )
        assert again.status_code in (200, 201), again.text
        third = httpx.post(
            server.url + "/api/v1/evidence",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=300,
        )
        assert third.status_code == 200 and third.json()["records_stored"] == 0
    finally:
        server.stop()
    with open_store(url) as store:
        stored = list(store.iter_records())
    keys = Counter((s.chain_id, s.sequence, s.line) for s in stored)
    assert max(keys.values()) == 1  # no duplicate row
    assert Counter(json.dumps(s.record, sort_keys=True) for s in stored) == expected  # none missing


def test_serve_with_the_tetragon_bridge_over_tls(
    run_cli: Any, test_keys: Any, tmp_path: Path
) -> None:
    """One worker (uvicorn's own server, not the balanced accept of `--workers`) with TLS and
    bearer tokens: the default deployment, in the suite without the slow tests."""
    events = (
        Path(__file__).resolve().parents[1]
        / "data"
        / "external"
        / "tetragon"
        / "examples"
        / "events.json"
    )
    cert, key = _tls_pair(tmp_path)
    tokens = tmp_path / "tokens.json"
    made = run_cli("serve", "token", "add", "--tokens", tokens, "--name", "w", "--scope", "write")
    write = {"Authorization": f"Bearer {made.stdout.strip()}"}
    server = Server(
        "--trust-root", test_keys.trust_root, "--store", f"sqlite:///{tmp_path / 's.sqlite'}",
        "--tetragon-evidence", tmp_path / "bridge", "--tetragon-key", test_keys.private("collector"),
        "--tokens", tokens, "--tls-cert", cert, "--tls-key", key,
        tls_ca=cert,
    )  # fmt: skip
    server.start()
    tls = server.verify
    try:
        timeline = server.url + "/api/v1/runtime/timeline"
        assert httpx.get(timeline, verify=tls, timeout=60).status_code == 401
        with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port: no answer
            httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        posted = httpx.post(server.url + "/api/v1/runtime-traces", content=events.read_bytes(),
                            headers={**write, "Content-Type": "application/x-ndjson"},
                            verify=tls, timeout=60)  # fmt: skip
        assert posted.status_code == 201 and posted.json()["enabled"] is True, posted.text
        records = posted.json()["result"]["records"]
        answer = httpx.get(timeline, headers=write, verify=tls, timeout=60).json()
        assert records >= 1 and len(answer["events"]) == records
    finally:
        server.stop()


def test_bridge_needs_one_worker(run_cli: Any, test_keys: Any, tmp_path: Path) -> None:
    refused = run_cli(
        "serve", "--trust-root", test_keys.trust_root, "--store", f"sqlite:///{tmp_path / 's.sqlite'}",
        "--tetragon-evidence", tmp_path / "b", "--workers", "2",
    )  # fmt: skip
    assert refused.exit_code == 2
    assert "field '--workers': the Tetragon bridge appends to one chain" in refused.stderr


def test_serving_process_collector_is_tuned() -> None:
    """`stella serve` freezes the loaded heap and collects young objects less often (GC was 14%
    of the server's CPU under load). In a process of its own: the settings are process-wide."""
    script = (
        "import gc\n"
        "from stella_bundle.api.server import GC_YOUNG_THRESHOLD, tune_gc\n"
        "assert gc.get_freeze_count() == 0\n"
        "tune_gc()\n"
        "assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD > 700, gc.get_threshold()\n"
        "assert gc.get_freeze_count() > 1000, gc.get_freeze_count()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


def test_serving_process_is_warmed_before_it_serves(tmp_path: Path) -> None:
    """`warm_up` does before serving what each worker's first requests paid (~90 ms of
    FastAPI's route state on the event loop, ~100 ms importing jsonschema for the first map
    loaded): afterwards requests build no route state and the map's validator is ready.
    In a process of its own: the imports and caches are process-wide."""
    script = f"""
import sys, datetime as dt
import fastapi.routing
from fastapi.testclient import TestClient
from stella_bundle.api import ApiSettings, create_app
from stella_bundle.api.server import warm_up
from stella_bundle.formats.trust_root import TrustRoot
from stella_bundle.store import open_store

url = "sqlite:///{tmp_path / "warm.sqlite"}"
open_store(url, initialise=True).close()
root = TrustRoot(expires=dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
app = create_app(ApiSettings(store_url=url, trust_root=root, tokens=None))
assert "jsonschema" not in sys.modules
warm_up(app)
from stella_bundle.schema import validator_for
assert validator_for.cache_info().currsize == 1, validator_for.cache_info()

def built(*args, **kwargs):
    raise AssertionError("route state built while serving")

fastapi.routing._populate_api_route_state = built
with TestClient(app) as client:
    assert client.get("/healthz").status_code == 200
    missing = client.post("/api/v1/function-maps/sha256:" + "0" * 64 + "/verify", json={{}})
    assert missing.status_code == 404, missing.text
    assert client.get("/api/v1/function-maps").status_code == 200
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
