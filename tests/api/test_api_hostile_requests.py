"""Hostile requests to the JSON endpoints: every one is a 4xx documented for its operation,
one line naming what is wrong, and nothing of it is stored.

Classes, each tried on every operation that takes a body (an evidence upload, a function map,
a verification): JSON the toolkit's rule refuses (a key twice in a document, NaN, numbers past
a double or of thousands of digits, text not UTF-8, nesting past the parser), a body that is
not JSON by its Content-Type, a compressed body; times not RFC 3339 and windows whose start is
after their end, on every parameter that takes one; refused chains named by the upload's own
fields, never by the server's scratch directory.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from api_support import chain_upload, records, statement, statement_bytes, write_chain

from stella_bundle.store import open_store

OPENAPI = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "openapi.json").read_text())
RECORD = (
    b'{"node_hash":"sha256:' + b"0" * 64 + b'","function_name":"f","probe_type":"uprobe",'
    b'"observed_at":"2026-01-23T10:00:00.000000Z"'
)


def _documented(method: str, template: str, status: int) -> bool:
    return str(status) in OPENAPI["paths"][template][method.lower()]["responses"]


def _stored(api_env: Any) -> tuple[int, int, int, int]:
    with open_store(api_env.store_url) as store:
        status = store.status()
        return status.records, status.chunks, status.function_maps, status.reports


def _refused(answer: Any, status: int, method: str, template: str, *words: str) -> str:
    assert answer.status_code == status, answer.text
    assert _documented(method, template, status), (template, status)
    assert answer.headers["content-type"].startswith("application/json")
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and len(answer.json()) == 1
    for word in words:
        assert word in detail, (word, detail)
    return str(detail)


@pytest.fixture
def map_digest(api_env: Any) -> str:
    answer = api_env.client.post(
        "/api/v1/function-maps",
        content=statement_bytes(statement(3)),
        headers=api_env.auth("write"),
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["digest"])


def _bodies(kind: str) -> dict[str, bytes]:
    """The hostile body of each class for one operation (`kind`)."""
    valid = {
        "evidence": b'{"records": [' + RECORD + b"}]}",
        "map": statement_bytes(statement(3)),
        "verify": b'{"observations": [' + RECORD + b"}]}",
    }[kind]
    first_key = {"evidence": b'"records"', "map": b'"_type"', "verify": b'"observations"'}[kind]
    with_field = valid[:-1] + b',"x":'
    bodies = {
        "NaN": valid.replace(b'"uprobe"', b"NaN") if kind != "map" else with_field + b"NaN}",
        "1e400": with_field + b"1e400}",
        "5000 digits": with_field + b"9" * 5000 + b"}",
        "latin-1": with_field + b'"\xe9"}',
        "UTF-16": valid.decode().encode("utf-16"),
        "nested": with_field + b"[" * 100_000 + b"]" * 100_000 + b"}",
    }
    # In a verify body the outermost keys only: its records are last-wins, as NDJSON lines are.
    bodies["key twice"] = valid.replace(first_key, first_key + b": [], " + first_key, 1)
    return bodies


OPERATIONS = {
    "evidence": ("/api/v1/evidence", "/api/v1/evidence"),
    "map": ("/api/v1/function-maps", "/api/v1/function-maps"),
    "verify": ("/api/v1/function-maps/{digest}/verify", "/api/v1/function-maps/{map_id}/verify"),
}
CASES = [(kind, name) for kind in OPERATIONS for name in _bodies(kind)]


@pytest.mark.parametrize(("kind", "name"), CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_json_the_toolkit_refuses_is_422_naming_it_and_stores_nothing(
    api_env: Any, map_digest: str, kind: str, name: str
) -> None:
    path, template = OPERATIONS[kind]
    before = _stored(api_env)
    answer = api_env.client.post(
        path.format(digest=map_digest),
        content=_bodies(kind)[name],
        headers={**api_env.auth("write"), "Content-Type": "application/json"},
    )
    detail = _refused(answer, 422, "POST", template, "<request body>")
    expected = {
        "NaN": "not a JSON number",
        "1e400": "not a JSON number",
        "5000 digits": "out of range",
        "latin-1": "not UTF-8",
        "UTF-16": "not UTF-8",
        "nested": "nested too deeply",
        "key twice": "appears twice",
    }[name]
    assert expected in detail
    assert _stored(api_env) == before


@pytest.mark.parametrize("kind", list(OPERATIONS))
@pytest.mark.parametrize(
    ("header", "value", "word"),
    [
        ("Content-Type", "text/plain", "Content-Type"),
        ("Content-Type", "application/x-www-form-urlencoded", "Content-Type"),
        ("Content-Encoding", "gzip", "Content-Encoding"),
        ("Content-Encoding", "deflate", "Content-Encoding"),
    ],
)
def test_a_body_not_json_by_its_headers_is_415_and_stores_nothing(
    api_env: Any, map_digest: str, kind: str, header: str, value: str, word: str
) -> None:
    path, template = OPERATIONS[kind]
    body = {
        "evidence": b'{"records": [' + RECORD + b"}]}",
        "map": statement_bytes(statement(5)),
        "verify": b'{"observations": [' + RECORD + b"}]}",
    }[kind]
    headers = {**api_env.auth("write"), "Content-Type": "application/json", header: value}
    if header == "Content-Encoding":
        body = gzip.compress(body)  # never inflated: refused by its header
    before = _stored(api_env)
    answer = api_env.client.post(path.format(digest=map_digest), content=body, headers=headers)
    _refused(answer, 415, "POST", template, word, value)
    assert _stored(api_env) == before
    # Without a Content-Type the body is read as JSON, as before.
    if header == "Content-Type" and kind == "map":
        plain = api_env.client.post(path, content=body, headers=api_env.auth("write"))
        assert plain.status_code == 201, plain.text


LAX_TIMES = [
    "20260123T100000Z",  # ISO 8601 basic
    "2026-W04-5T10:00:00Z",  # ISO week date
    "2026-01-23T10:00Z",  # no seconds
    "2026-01-23T10Z",
    "2026-01-23 10:00:00Z",
    "2026-01-23T10:00:00z",
    "2026-01-23T10:00:00.1234567891Z",  # past nanoseconds
]


@pytest.mark.parametrize("value", LAX_TIMES)
def test_times_not_rfc3339_are_refused_on_every_parameter(
    api_env: Any, map_digest: str, value: str
) -> None:
    read, write = api_env.auth("read"), api_env.auth("write")
    before = _stored(api_env)
    for field in ("from", "to"):
        answers = [
            (
                api_env.client.get("/api/v1/observations", params={field: value}, headers=read),
                "GET",
                "/api/v1/observations",
            ),
            (
                api_env.client.get(
                    f"/api/v1/function-maps/{map_digest}/coverage",
                    params={field: value},
                    headers=read,
                ),
                "GET",
                "/api/v1/function-maps/{map_id}/coverage",
            ),
            (
                api_env.client.post(
                    f"/api/v1/function-maps/{map_digest}/verify", json={field: value}, headers=write
                ),
                "POST",
                "/api/v1/function-maps/{map_id}/verify",
            ),
        ]
        for answer, method, template in answers:
            _refused(answer, 422, method, template, f"'{field}'", "RFC 3339")
    assert _stored(api_env) == before


def test_a_window_ending_before_it_starts_is_refused_everywhere(
    api_env: Any, map_digest: str
) -> None:
    window = {"from": "2026-01-24T00:00:00Z", "to": "2026-01-23T00:00:00Z"}
    read, write = api_env.auth("read"), api_env.auth("write")
    before = _stored(api_env)
    answers = [
        (
            api_env.client.get("/api/v1/observations", params=window, headers=read),
            "GET",
            "/api/v1/observations",
        ),
        (
            api_env.client.get(
                "/api/v1/observations", params={**window, "summary": "true"}, headers=read
            ),
            "GET",
            "/api/v1/observations",
        ),
        (
            api_env.client.get(
                f"/api/v1/function-maps/{map_digest}/coverage", params=window, headers=read
            ),
            "GET",
            "/api/v1/function-maps/{map_id}/coverage",
        ),
        (
            api_env.client.post(
                f"/api/v1/function-maps/{map_digest}/verify", json=window, headers=write
            ),
            "POST",
            "/api/v1/function-maps/{map_id}/verify",
        ),
    ]
    for answer, method, template in answers:
        detail = _refused(answer, 422, method, template, "field 'from'", "later than")
        assert "--" not in detail  # the API's parameter, not the CLI's option
    assert _stored(api_env) == before


def test_refused_chains_are_named_by_the_upload_not_the_servers_scratch_directory(
    api_env: Any, test_keys: Any, tmp_path: Path
) -> None:
    signer = test_keys.signer("collector")
    good = chain_upload(write_chain(tmp_path / "a", "chain-a", records(160, 6), signer))
    other = chain_upload(write_chain(tmp_path / "b", "chain-a", records(160, 6, day=24), signer))
    stranger = chain_upload(
        write_chain(tmp_path / "s", "chain-s", records(60, 6), test_keys.signer("stranger"))
    )
    chunks = good["chunks"]
    uploads = {
        "gap": [{"chain_id": "chain-a", "chunks": [chunks[0], chunks[2]]}],
        "spliced": [{"chain_id": "chain-a", "chunks": [chunks[0], other["chunks"][1]]}],
        "renamed": [{**good, "chain_id": "chain-b"}],
        "relabelled": [{"chain_id": "chain-a", "chunks": [{**chunks[0], "sequence": 2}]}],
        "untrusted key": [good | {"chain_id": "chain-a"}, stranger],
        "bad seal": [{"chain_id": "chain-a", "chunks": [{**chunks[0], "seal": "e30="}]}],
    }
    for name, chains in uploads.items():
        answer = api_env.client.post(
            "/api/v1/evidence", json={"chains": chains}, headers=api_env.auth("write")
        )
        detail = _refused(answer, 422, "POST", "/api/v1/evidence", "<request body> chains")
        assert str(tmp_path) not in detail and "stella-api-" not in detail, (name, detail)
        assert _stored(api_env) == (0, 0, 0, 0), name
        # The stranger's chain is the second of its upload.
        assert ("chains[1]" if name == "untrusted key" else "chains[0]") in detail, detail


def _verify_answer(api_env: Any, digest: str, body: bytes) -> Any:
    return api_env.client.post(
        f"/api/v1/function-maps/{digest}/verify",
        content=body,
        headers={**api_env.auth("write"), "Content-Type": "application/json"},
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"observations": [' + RECORD + b'}], "observations": []}',
        # The same key spelled with an escape: msgspec and orjson read it as the same key.
        b'{"observations": [], "\\u006fbservations": [' + RECORD + b"}]}",
        b'{"from": "2026-01-23T10:00:00Z", "observations": ['
        + RECORD
        + b'}], "from": "2026-01-23T11:00:00Z"}',
        # A body the typed decoder refuses (a lax value) reaches the operation: refused there too.
        b'{"observations": [' + RECORD + b', "pid": "7"}], "observations": []}',
    ],
    ids=["observations twice", "escaped spelling", "from twice", "operation's path"],
)
def test_a_verify_body_naming_an_outer_key_twice_is_refused(
    api_env: Any, map_digest: str, body: bytes
) -> None:
    """`{"observations": [...], "observations": [...]}` was verified with the last array:
    msgspec and orjson keep the last value, another reader the first. Refused like a key
    twice in any document, on both paths (typed decoder and operation); nothing stored."""
    before = _stored(api_env)
    answer = _verify_answer(api_env, map_digest, body)
    detail = _refused(answer, 422, "POST", "/api/v1/function-maps/{map_id}/verify")
    assert detail.startswith("<request body>: malformed JSON: key ") and "appears twice" in detail
    assert ("'from'" if b'"from"' in body[20:] else "'observations'") in detail
    assert _stored(api_env) == before


def test_a_verify_body_with_each_outer_key_once_is_verified(api_env: Any, map_digest: str) -> None:
    """What the outer-key check must not refuse: a record's keys named twice (last-wins), the
    key's name as a record's value, other members around the observations, spaces anywhere."""
    bodies = [
        b'{"observations": [' + RECORD.replace(b'"f"', b'"g", "function_name": "f"') + b"}]}",
        b'{"observations": [' + RECORD.replace(b'"f"', b'"observations"') + b"}]}",
        b'{"to": "2026-01-24T00:00:00Z", "observations": ['
        + RECORD
        + b'}], "fail_on_unexpected": false}',
        b' \n{ "observations" :\t[ ' + RECORD + b"} ] }\r\n",
    ]
    for body in bodies:
        answer = _verify_answer(api_env, map_digest, body)
        assert answer.status_code == 200, (body[:60], answer.text)
        assert answer.json()["records"]["read"] == 1
