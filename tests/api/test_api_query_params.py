"""Query parameters a hostile client sends: one given twice (which would count is a guess: 422),
times with another offset than UTC (read as the instant they name), limits out of range."""

from __future__ import annotations

from typing import Any

import pytest
from api_support import records


@pytest.mark.parametrize(
    "query, name",
    [
        ("from=2026-01-23T10:00:00Z&from=2026-01-24T10:00:00Z", "from"),
        ("limit=1&limit=100000", "limit"),
        ("symbol=fn_1&to=2026-01-24T00:00:00Z&symbol=*", "symbol"),
        ("summary=true&summary=false", "summary"),
    ],
)
def test_a_parameter_given_twice_is_refused(api_env: Any, query: str, name: str) -> None:
    answer = api_env.client.get(f"/api/v1/observations?{query}", headers=api_env.auth("read"))
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"] == (
        f"field 'query.{name}': given more than once; each query parameter takes one value"
    )


def test_times_with_an_offset_are_the_instant_they_name(api_env: Any) -> None:
    stored = api_env.client.post(
        "/api/v1/evidence", json={"records": records(4, 4)}, headers=api_env.auth("write")
    )
    assert stored.status_code == 201, stored.text  # observed 10:00-10:45Z on 2026-01-23

    def count(window_from: str, window_to: str) -> int:
        answer = api_env.client.get(
            "/api/v1/observations",
            params={"from": window_from, "to": window_to},
            headers=api_env.auth("read"),
        )
        assert answer.status_code == 200, answer.text
        return len(answer.json()["records"])

    assert count("2026-01-23T09:30:00Z", "2026-01-23T11:00:00Z") == 4
    # The same window written at +05:00 and -03:30.
    assert count("2026-01-23T14:30:00+05:00", "2026-01-23T16:00:00+05:00") == 4
    assert count("2026-01-23T06:00:00-03:30", "2026-01-23T07:30:00-03:30") == 4
    # 10:00+05:00 is 05:00Z: before every record, not the hour they fill.
    assert count("2026-01-23T10:00:00+05:00", "2026-01-23T11:00:00+05:00") == 0


@pytest.mark.parametrize("limit", ["0", "-1", "100001", "1e3", "99999999999999999999999", ""])
def test_a_limit_out_of_range_is_refused(api_env: Any, limit: str) -> None:
    answer = api_env.client.get(f"/api/v1/observations?limit={limit}", headers=api_env.auth("read"))
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith("field 'query.limit': ")
