"""POST …/verify answers the CLI's own report; maps are stored signed (checked) or unsigned."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from api_support import chain_upload, records, signed_bytes, statement, statement_bytes, write_chain
from fastapi import FastAPI

from stella_bundle.api import verify_route
from stella_bundle.api.deps import VERIFY_THREADS, JsonBodyRoute, VerifyThreads
from stella_bundle.api.models import decode_verify_body
from stella_bundle.canonical import canonical_bytes
from stella_bundle.errors import InputError
from stella_bundle.store.sqlite import SqliteStore, unpack_report


def _without_source(report: dict[str, Any]) -> dict[str, Any]:
    # Where the map was read from (a file for the CLI, the store for the API) is the one
    # field that names the caller's input; everything else must be equal.
    function_map = dict(report["function_map"])
    assert function_map.pop("source")
    return {**report, "function_map": function_map}


def _post_signed_map(api_env: Any, test_keys: Any, tmp_path: Path, paths: int) -> tuple[str, Path]:
    document = statement(paths)
    envelope = signed_bytes(document, test_keys.signer("function-map"))
    map_path = tmp_path / "function-map.dsse.json"
    map_path.write_bytes(envelope)
    answer = api_env.client.post(
        "/api/v1/function-maps", content=envelope, headers=api_env.auth("write")
    )
    assert answer.status_code == 201, answer.text
    stored = answer.json()
    assert (stored["signed"], stored["signature_checked"], stored["created"]) == (True, True, True)
    assert stored["signers"]
    return stored["digest"], map_path


def test_verify_report_equals_cli_report(
    api_env: Any, test_keys: Any, tmp_path: Path, run_cli: Any
) -> None:
    digest, map_path = _post_signed_map(api_env, test_keys, tmp_path, 20)
    observed = records(300, 20, skip=3, stray=4)
    ndjson = tmp_path / "obs.ndjson"
    ndjson.write_bytes(b"".join(canonical_bytes(r) + b"\n" for r in observed))
    for body_extra, cli_extra in (
        ({}, []),
        (
            {
                "from": "2026-01-23T10:10:00Z",
                "to": "2026-01-23T10:40:00Z",
                "fail_on_unexpected": True,
                "probe_weights": {"kprobe": 0.5},
            },
            [
                "--from",
                "2026-01-23T10:10:00Z",
                "--to",
                "2026-01-23T10:40:00Z",
                "--fail-on-unexpected",
                "true",
                "--probe-weight",
                "kprobe=0.5",
            ],
        ),
    ):
        cli = run_cli(
            "function-map",
            "verify",
            "--function-map",
            map_path,
            "--trust-root",
            test_keys.trust_root,
            "--observations",
            ndjson,
            "--format",
            "json",
            *cli_extra,
        )
        assert cli.exit_code in (0, 1), cli.stderr
        answer = api_env.client.post(
            f"/api/v1/function-maps/{digest}/verify",
            json={"observations": observed, **body_extra},
            headers=api_env.auth("write"),
        )
        assert answer.status_code == 200, answer.text
        assert _without_source(answer.json()) == _without_source(json.loads(cli.stdout))
        assert answer.headers["x-stella-report-id"].isdigit()
    # The second run (unexpected symbols fail it) said no, and both agree on that.
    assert answer.json()["verified"] is False


def test_verify_over_stored_window_equals_cli_over_evidence(
    api_env: Any, test_keys: Any, tmp_path: Path, run_cli: Any
) -> None:
    digest, map_path = _post_signed_map(api_env, test_keys, tmp_path, 12)
    chain = write_chain(
        tmp_path / "evidence", "chain-w", records(200, 12, skip=1), test_keys.signer("collector")
    )
    posted = api_env.client.post(
        "/api/v1/evidence", json={"chains": [chain_upload(chain)]}, headers=api_env.auth("write")
    )
    assert posted.status_code == 201, posted.text
    window = ["--from", "2026-01-23T10:05:00Z", "--to", "2026-01-23T10:50:00Z"]
    cli = run_cli(
        "function-map",
        "verify",
        "--function-map",
        map_path,
        "--trust-root",
        test_keys.trust_root,
        "--evidence",
        chain.parent,
        "--format",
        "json",
        *window,
    )
    answer = api_env.client.post(
        f"/api/v1/function-maps/{digest}/verify",
        json={"from": window[1], "to": window[3]},
        headers=api_env.auth("write"),
    )
    assert answer.status_code == 200, answer.text
    assert _without_source(answer.json()) == _without_source(json.loads(cli.stdout))
    assert answer.json()["records"]["in_window"] > 0


def test_function_maps_stored_and_listed(api_env: Any, test_keys: Any) -> None:
    unsigned = statement_bytes(statement(5))
    first = api_env.client.post(
        "/api/v1/function-maps", content=unsigned, headers=api_env.auth("write")
    )
    assert first.status_code == 201
    assert (first.json()["signed"], first.json()["signature_checked"]) == (False, False)
    again = api_env.client.post(
        "/api/v1/function-maps", content=unsigned, headers=api_env.auth("write")
    )
    assert again.status_code == 200 and again.json()["created"] is False
    digest = first.json()["digest"]
    listed = api_env.client.get("/api/v1/function-maps", headers=api_env.auth("read")).json()
    assert [m["digest"] for m in listed["function_maps"]] == [digest]
    one = api_env.client.get(f"/api/v1/function-maps/{digest}", headers=api_env.auth("read"))
    assert one.status_code == 200
    assert one.json()["statement"] == json.loads(unsigned) and one.json()["envelope"] is None
    # The bare hex works too; an unknown digest is 404, a malformed one 422.
    assert (
        api_env.client.get(
            f"/api/v1/function-maps/{digest[7:]}", headers=api_env.auth("read")
        ).status_code
        == 200
    )
    missing = api_env.client.get("/api/v1/function-maps/" + "0" * 64, headers=api_env.auth("read"))
    assert (
        missing.status_code == 404
        and missing.json()["detail"] == f"no function map sha256:{'0' * 64} in this store"
    )
    assert (
        api_env.client.get("/api/v1/function-maps/xyz", headers=api_env.auth("read")).status_code
        == 422
    )


def test_signed_copy_upgrades_an_unsigned_map_and_never_downgrades(
    api_env: Any, test_keys: Any
) -> None:
    """Issue 11: the signed copy of a map stored unsigned was answered 409."""
    write = api_env.auth("write")
    unsigned = statement_bytes(statement(6))
    first = api_env.client.post("/api/v1/function-maps", content=unsigned, headers=write)
    assert first.status_code == 201, first.text
    digest = first.json()["digest"]
    # Verified before it is stored: the map's report says unsigned (cached by the server).
    before = api_env.client.post(f"/api/v1/function-maps/{digest}/verify", json={}, headers=write)
    assert before.status_code == 200, before.text
    assert before.json()["function_map"]["signed"] is False
    envelope = signed_bytes(statement(6), test_keys.signer("function-map"))
    upgraded = api_env.client.post("/api/v1/function-maps", content=envelope, headers=write)
    assert upgraded.status_code == 201, upgraded.text
    answer = upgraded.json()
    assert (answer["digest"], answer["created"]) == (digest, True)
    assert (answer["signed"], answer["signature_checked"]) == (True, True) and answer["signers"]
    assert answer["stored_at"] == first.json()["stored_at"]
    one = api_env.client.get(f"/api/v1/function-maps/{digest}", headers=api_env.auth("read"))
    assert one.json()["envelope"] == json.loads(envelope)
    assert one.json()["statement"] == json.loads(unsigned)
    # The unsigned copy again, or the same envelope again: stored already, the signed one kept.
    for body in (unsigned, envelope):
        again = api_env.client.post("/api/v1/function-maps", content=body, headers=write)
        assert again.status_code == 200, again.text
        assert again.json() == {**answer, "created": False}
    # The verifier now takes the map as signed and checked (no stale parsed copy).
    after = api_env.client.post(f"/api/v1/function-maps/{digest}/verify", json={}, headers=write)
    assert after.status_code == 200, after.text
    assert after.json()["function_map"]["signed"] is True
    listed = api_env.client.get("/api/v1/function-maps", headers=api_env.auth("read")).json()
    assert [m["digest"] for m in listed["function_maps"]] == [digest]


def test_signed_map_failing_verification_is_refused(api_env: Any, test_keys: Any) -> None:
    # Signed by a key the trust root does not trust, then by a trusted key of another role.
    for role in ("stranger", "collector"):
        envelope = signed_bytes(statement(4), test_keys.signer(role))
        answer = api_env.client.post(
            "/api/v1/function-maps", content=envelope, headers=api_env.auth("write")
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"].startswith(
            "verification failed, nothing stored: <request body>"
        )
    # Not JSON, not a Statement: one line naming the body.
    bad = api_env.client.post("/api/v1/function-maps", content=b"{", headers=api_env.auth("write"))
    assert bad.status_code == 422 and bad.json()["detail"].startswith("<request body>")
    listed = api_env.client.get("/api/v1/function-maps", headers=api_env.auth("read")).json()
    assert listed["function_maps"] == []


def test_bad_observation_names_the_record(api_env: Any) -> None:
    digest = api_env.client.post(
        "/api/v1/function-maps",
        content=statement_bytes(statement(3)),
        headers=api_env.auth("write"),
    ).json()["digest"]
    body = records(3, 3)
    del body[1]["observed_at"]
    answer = api_env.client.post(
        f"/api/v1/function-maps/{digest}/verify",
        json={"observations": body},
        headers=api_env.auth("write"),
    )
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("<request body>:2:"), answer.text
    late = api_env.client.post(
        f"/api/v1/function-maps/{digest}/verify",
        json={"from": "2026-01-24T00:00:00Z", "to": "2026-01-23T00:00:00Z"},
        headers=api_env.auth("write"),
    )
    assert late.status_code == 422 and "later than" in late.json()["detail"]


def test_typed_body_decoder_and_the_generic_path_give_the_same_report(api_env: Any) -> None:
    """The verify body is decoded by msgspec straight into typed records when it can be
    (`decode_verify_body`); a body it refuses takes FastAPI's JSON + pydantic path. Both must
    answer the same report, also for records the typed fold declines (non-canonical times,
    aggregated records: folded one by one from `DecodedRecords.as_dicts`)."""
    write = api_env.auth("write")
    digest = api_env.client.post(
        "/api/v1/function-maps", content=statement_bytes(statement(8)), headers=write
    ).json()["digest"]
    plain = records(60, 8, skip=1, stray=2)
    aggregated = [
        *plain[:10],
        {**plain[10], "count": 5, "first_observed_at": "2026-01-23T09:00:00.000000Z"},
        {**plain[11], "details": {"argv": ["a"]}},
    ]
    non_canonical = [{**r, "observed_at": r["observed_at"][:19] + "+00:00"} for r in plain]
    for observations in (plain, aggregated, non_canonical):
        typed = {"observations": observations, "to": "2026-01-23T10:05:00Z"}
        # `window_to` is VerifyRequest's own field name: pydantic takes it, msgspec does not.
        generic = {"observations": observations, "window_to": "2026-01-23T10:05:00Z"}
        assert decode_verify_body(json.dumps(typed).encode()) is not None
        assert decode_verify_body(json.dumps(generic).encode()) is None
        answers = [
            api_env.client.post(f"/api/v1/function-maps/{digest}/verify", json=body, headers=write)
            for body in (typed, generic)
        ]
        assert [a.status_code for a in answers] == [200, 200], answers[0].text
        assert answers[0].json() == answers[1].json()
        assert answers[0].json()["records"]["outside_window"] > 0


def test_typed_body_with_a_bad_record_names_it(api_env: Any) -> None:
    """A record msgspec decodes but the record rules refuse (an impossible date): the typed
    body falls back to the one-by-one check, which names the record (one line, 422)."""
    write = api_env.auth("write")
    digest = api_env.client.post(
        "/api/v1/function-maps", content=statement_bytes(statement(3)), headers=write
    ).json()["digest"]
    body = records(4, 3)
    body[2]["observed_at"] = "2026-02-30T10:00:00.000000Z"
    raw = json.dumps({"observations": body}).encode()
    assert decode_verify_body(raw) is not None
    answer = api_env.client.post(
        f"/api/v1/function-maps/{digest}/verify",
        content=raw,
        headers={**write, "Content-Type": "application/json"},
    )
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert detail.startswith("<request body>:3:") and "observed_at" in detail, detail
    assert "\n" not in detail


def test_fast_route_answers_the_common_request_and_hands_over_the_rest(
    api_env: Any, monkeypatch: Any
) -> None:
    """`VerifyRoute` answers a typed JSON body with a write token itself; every other request
    (no or a weak token, a body the typed decoder refuses, a query, another content type, a
    malformed id) goes to the FastAPI operation, whose answers stay what they were."""
    handed: list[str] = []
    operation = JsonBodyRoute.handle

    async def counted(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["path"].endswith("/verify"):
            handed.append(scope["path"])
        await operation(self, scope, receive, send)

    monkeypatch.setattr(JsonBodyRoute, "handle", counted)
    write = api_env.auth("write")
    digest = api_env.client.post(
        "/api/v1/function-maps", content=statement_bytes(statement(4)), headers=write
    ).json()["digest"]
    path = f"/api/v1/function-maps/{digest}/verify"
    typed = json.dumps({"observations": records(20, 4, stray=1)}).encode()
    as_json = {"Content-Type": "application/json; charset=utf-8"}

    answer = api_env.client.post(path, content=typed, headers={**write, **as_json})
    assert answer.status_code == 200 and handed == []
    # Serialised once: the bytes answered are the bytes stored.
    with sqlite3.connect(api_env.store_url.removeprefix("sqlite:///")) as db:
        (stored,) = db.execute(
            "SELECT report FROM verification_reports WHERE id = ?",
            (int(answer.headers["x-stella-report-id"]),),
        ).fetchone()
    assert unpack_report(stored) == answer.content and isinstance(stored, bytes)  # zstd
    # The map is cached now: later verifications read its signature status from the index,
    # not its row (whose statement spans overflow pages, read again after every other write).
    read_rows: list[str] = []
    row_reader = SqliteStore.get_function_map

    def counted_read(self: SqliteStore, digest: str) -> Any:
        read_rows.append(digest)
        return row_reader(self, digest)

    monkeypatch.setattr(SqliteStore, "get_function_map", counted_read)
    again = api_env.client.post(path, content=typed, headers={**write, **as_json})
    assert again.content == answer.content and read_rows == []
    monkeypatch.setattr(SqliteStore, "get_function_map", row_reader)
    # A large body is decoded in a verification thread too: the same report.
    monkeypatch.setattr(verify_route, "INLINE_DECODE_MAX_BYTES", 0)
    threaded = api_env.client.post(path, content=typed, headers={**write, **as_json})
    assert threaded.status_code == 200 and handed == []
    assert threaded.json() == answer.json()
    # Refused by the fast path's checks, answered by the operation as before.
    refusals = [
        (path, typed, as_json, 401),
        (path, typed, {**api_env.auth("read"), **as_json}, 403),
        (path, typed, {**write, "Content-Type": "text/plain"}, 415),
        (path + "?from=2026-01-23T10:00:00Z", typed, {**write, **as_json}, 422),
        (path.replace(digest, "xyz"), typed, {**write, **as_json}, 422),
        (path, b'{"observations": [{"node_hash": 1}]}', {**write, **as_json}, 422),
        (path, b"{", {**write, **as_json}, 422),
    ]
    for where, body, headers, status in refusals:
        handed.clear()
        refused = api_env.client.post(where, content=body, headers=headers)
        assert (refused.status_code, len(handed)) == (status, 1), (where, headers, refused.text)
        assert "\n" not in refused.json()["detail"]
    # Errors of the verification itself: the app's handlers answer, from the fast path too.
    handed.clear()
    unknown = api_env.client.post(
        path.replace(digest[7:], "0" * 64), content=typed, headers={**write, **as_json}
    )
    assert unknown.status_code == 404 and handed == []
    assert unknown.json()["detail"] == f"no function map sha256:{'0' * 64} in this store"
    bad_date = api_env.client.post(
        path, content=b'{"from": "yesterday"}', headers={**write, **as_json}
    )
    assert bad_date.status_code == 422 and "from" in bad_date.json()["detail"] and handed == []


def test_the_lane_answers_before_the_middleware_and_hands_the_app_the_rest(
    api_env: Any, monkeypatch: Any
) -> None:
    """`StellaApi` answers the fast path's request itself (`VerifyLane`), counted in the
    metrics as the middleware counts it; anything else, errors of the verification included,
    reaches the app whole, body replayed, and is answered as before."""
    entered: list[str] = []
    app_call = FastAPI.__call__

    async def counted(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/verify"):
            entered.append(scope["path"])
        await app_call(self, scope, receive, send)

    monkeypatch.setattr(FastAPI, "__call__", counted)
    write = api_env.auth("write")
    as_json = {**write, "Content-Type": "application/json"}
    digest = api_env.client.post(
        "/api/v1/function-maps", content=statement_bytes(statement(4)), headers=write
    ).json()["digest"]
    path = f"/api/v1/function-maps/{digest}/verify"
    typed = json.dumps({"observations": records(20, 4, stray=1)}).encode()
    answers = [api_env.client.post(path, content=typed, headers=as_json) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200] and entered == []
    assert answers[0].json() == answers[1].json()
    assert answers[0].headers["x-stella-report-id"] != answers[1].headers["x-stella-report-id"]
    handed = [
        (path.replace(digest[7:], "0" * 64), typed, as_json, 404),  # raised by the verification
        (path, b'{"observations": [{"node_hash": 1}]}', as_json, 422),  # typed decoder refuses
        (path, b'{"observations": [], "observations": []}', as_json, 422),
        (path, b" " * (4 << 20) + typed, as_json, 413),  # past --max-body-bytes
        (path, typed, {**as_json, "Content-Encoding": "identity"}, 200),
    ]
    for where, body, headers, status in handed:
        entered.clear()
        answer = api_env.client.post(where, content=body, headers=headers)
        assert (answer.status_code, entered) == (status, [where]), (status, answer.text[:200])
    chunked = api_env.client.post(path, content=iter([typed[:100], typed[100:]]), headers=as_json)
    assert chunked.status_code == 200 and len(entered) == 2  # no Content-Length: the app's
    metrics = api_env.client.get("/metrics", headers=api_env.auth("read")).text
    route = 'method="POST",route="/api/v1/function-maps/{map_id}/verify"'
    assert f'stella_api_requests_total{{{route},status="200"}} 4.0' in metrics
    assert f'stella_api_requests_total{{{route},status="404"}} 1.0' in metrics
    verdict = str(answers[0].json()["verified"]).lower()
    assert f'stella_api_verifications_total{{verified="{verdict}"}} 4.0' in metrics


def test_verify_threads_answer_raise_and_outlive_a_cancelled_request() -> None:
    """The verification threads: at most VERIFY_THREADS at work at once, each call answered
    with its value or its exception on the loop; a request cancelled while its work runs
    (the client left) leaves the thread to finish it; `stop` ends the threads."""
    threads = VerifyThreads(VERIFY_THREADS)
    running: list[int] = []
    widest: list[int] = [0]
    turn = threading.Condition()

    def work(value: int) -> int:
        with turn:
            running.append(value)
            widest[0] = max(widest[0], len(running))
            turn.notify_all()
            if value < VERIFY_THREADS:
                # The first calls wait for each other (a deadline, not a sleep that a thread
                # woken late on a loaded machine outlasts): as many at once as threads.
                turn.wait_for(lambda: len(running) >= VERIFY_THREADS, timeout=60)
        time.sleep(0.05)  # room for a thread too many to join them
        with turn:
            running.remove(value)
        return value * 2

    def refuse() -> None:
        raise InputError("bad record", field="observations")

    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow() -> int:
        started.set()
        release.wait(30)
        finished.set()
        return 1

    async def main() -> None:
        assert await asyncio.gather(*(threads.run(work, n) for n in range(6))) == [
            0, 2, 4, 6, 8, 10,
        ]  # fmt: skip
        with pytest.raises(InputError, match="bad record"):
            await threads.run(refuse)
        task = asyncio.ensure_future(threads.run(slow))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        assert await threads.run(work, 7) == 14  # both threads serve on
        assert finished.wait(30)

    asyncio.run(main())
    assert widest[0] == VERIFY_THREADS
    named = [t for t in threading.enumerate() if t.name.startswith("verify-")]
    threads.stop()
    for thread in named:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in named)


def test_a_verification_raising_stop_iteration_is_answered_not_left_waiting() -> None:
    """An asyncio future refuses StopIteration as its exception (TypeError in the loop's
    callback): the request it answers would wait forever. Raised as a RuntimeError, as
    anyio's threads (which these replaced) and coroutines do."""
    threads = VerifyThreads(1)

    def exhausted() -> None:
        next(iter(()))

    async def main() -> None:
        with pytest.raises(RuntimeError, match="StopIteration"):
            await asyncio.wait_for(threads.run(exhausted), timeout=60)

    try:
        asyncio.run(main())
    finally:
        threads.stop()
