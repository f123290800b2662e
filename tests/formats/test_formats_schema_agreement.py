"""Each model accepts and refuses what its JSON Schema does, on generated documents.

Documents are an example of the format with one to three edits drawn by hypothesis: a field
removed, an unknown field added, a value replaced by a value near it (a bound, an off-by-one,
a trailing newline, another case) or by any JSON value. Many stay valid, many do not. The model
may refuse what the schema accepts only by a rule listed in formats_cases.beyond_schema; every
document the model accepts it writes back schema-valid, and reads back to the same model.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from formats_cases import CASES, examples
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from stella_bundle.canonical import MAX_SAFE_INTEGER
from stella_bundle.errors import InputError
from stella_bundle.schema import load_schema, validator_for
from tests.conftest import scaled_examples

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**60), 2**60),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


def _near(value: Any) -> list[Any]:
    """Values close to `value` that a format may or may not accept."""
    if isinstance(value, bool):
        return [not value, int(value), None]
    if isinstance(value, int):
        return [
            value + 1,
            value - 1,
            0,
            -1,
            1,
            MAX_SAFE_INTEGER,
            MAX_SAFE_INTEGER + 1,
            float(value),
        ]
    if isinstance(value, float):
        return [0, 1, 0.5, -0.1, 1.1, int(value), value / 2]
    if isinstance(value, str):
        return [
            "",
            value + "\n",
            value.upper(),
            value[:-1],
            value + "x",
            " " + value,
            value.replace("Z", "+00:00"),
            value.replace("T", " "),
            value[:10],
            "sha256:" + "0" * 64,
            "0" * 64,
            "/" + value,
            value + "/",
            "a/../" + value,
        ]
    if isinstance(value, list):
        return [[], value[:-1], value + value[-1:], list(reversed(value)), None]
    if isinstance(value, dict):
        return [{}, None, []]
    return [0, "", None]


def _slots(document: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in the document (the root included), as a path of keys and indexes."""
    found = [path]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _slots(value, (*path, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += _slots(value, (*path, index))
    return found


def _get(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        document = document[part]
    return document


def _property_names(schema: Any) -> set[str]:
    """Every property name the schema declares anywhere: added where it may or may not belong,
    they find a field the schema allows and the model does not know (or the reverse)."""
    names: set[str] = set()
    if isinstance(schema, dict):
        names |= set(schema.get("properties", {}))
        for value in schema.values():
            names |= _property_names(value)
    elif isinstance(schema, list):
        for value in schema:
            names |= _property_names(value)
    return names


@st.composite
def edited(draw: st.DrawFn, base: Any, kind: str) -> Any:
    document = copy.deepcopy(base)
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):  # mostly one: more stay valid
        path = draw(st.sampled_from(_slots(document)))
        target = _get(document, path)
        action = draw(st.sampled_from(["near", "near", "near", "any", "remove", "add"]))
        if action == "add" and isinstance(target, dict):
            known = sorted(_property_names(load_schema(CASES[kind].kind)))
            name = draw(st.sampled_from(known) | st.sampled_from(["extra", "Sequence"]) | st.text())
            target[name] = draw(json_values)
            continue
        if not path:
            continue  # the root is replaced only by whole-document edits below
        parent, key = _get(document, path[:-1]), path[-1]
        if action == "remove":
            del parent[key]
        elif action == "any":
            parent[key] = draw(json_values)
        else:
            parent[key] = draw(st.sampled_from(_near(target)))
    if draw(st.integers(0, 49)) == 0:
        return draw(json_values)  # not even an object, sometimes
    return document


def _model_verdict(kind: str, document: Any) -> tuple[Any, str | None]:
    try:
        return CASES[kind].parse(copy.deepcopy(document)), None
    except InputError as exc:
        return None, exc.message


def check_agreement(kind: str, document: Any) -> bool:
    """Assert the model and the schema agree on one document; whether the schema accepts it."""
    validator = validator_for(CASES[kind].kind)
    schema_accepts = validator.is_valid(document)
    model, refusal = _model_verdict(kind, document)
    event(f"{kind}: schema {'accepts' if schema_accepts else 'refuses'}")
    if refusal is not None:
        assert not schema_accepts or any(
            re.search(pattern, refusal) for pattern in CASES[kind].beyond_schema
        ), f"the model refuses what the schema accepts: {refusal}"
        return schema_accepts
    assert schema_accepts, (
        f"the model accepts what the schema refuses: {next(validator.iter_errors(document))}"
    )
    written = model.to_dict()
    assert validator.is_valid(written), next(validator.iter_errors(written))
    assert CASES[kind].parse(written) == model
    return True


@pytest.mark.parametrize("kind", sorted(CASES))
def test_model_and_schema_agree(kind: str) -> None:
    verdicts: list[bool] = []
    count = scaled_examples(200)
    for _name, base in examples(kind):

        @settings(max_examples=count, deadline=None, suppress_health_check=list(HealthCheck))
        @given(edited(base, kind))
        @example(copy.deepcopy(base))
        def agree(document: Any) -> None:
            verdicts.append(check_agreement(kind, document))

        agree()
    # Both kinds of document were generated: valid ones and ones the schema refuses. About one
    # edit in ten stays valid, so a short local run (tens of examples) may see only one or two:
    # five of each are asked of the full count (the CI profile), one of each otherwise.
    needed = 5 if count >= 200 else 1
    assert verdicts.count(True) >= needed and verdicts.count(False) >= needed, (
        kind,
        verdicts.count(True),
        verdicts.count(False),
    )
