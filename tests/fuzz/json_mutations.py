"""Structural mutations of JSON documents, as hypothesis strategies.

A mutation picks a node of the document (by index in a walk of the tree) and replaces it, deletes
it, adds a sibling, or wraps it; the result is written back as JSON text. Some values cannot be
written by `json.dumps` (integers of thousands of digits, nesting 100,000 deep, lone surrogates,
NaN, duplicate keys): they are spliced in as raw text through placeholders.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st

# Raw JSON texts that json.dumps cannot produce or that parsers treat specially.
RAW_VALUES = [
    "9" * 4301,  # over Python's int-from-string limit (4,300 digits)
    "-" + "9" * 5000,
    "1" + "0" * 400,
    "1e400",  # json.loads gives inf
    "-1e400",
    "NaN",
    "Infinity",
    "-0",
    "-0.0",
    "1E2",
    "0.1",
    '"\\ud800"',  # a lone surrogate
    '"\\udfff\\ud800"',
    '"\\u0000"',
    "[" * 50 + "]" * 50,
    "[" * 1000 + "]" * 1000,
    "[" * 100_000 + "]" * 100_000,
    '{"a":' * 3000 + "1" + "}" * 3000,
]

INTERESTING_INTS = [
    0,
    -1,
    1,
    2**31,
    2**32,
    2**53 - 1,
    2**53,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**53),
    10**30,
]

INTERESTING_STRINGS = [
    "",
    " ",
    "\n",
    "x" * 10_000,
    "9999-12-31T23:59:59-23:59",  # overflows when moved to UTC
    "0001-01-01T00:00:00+23:59",  # underflows when moved to UTC
    "2026-02-30T00:00:00Z",
    "2026-11-21T05:00:00.0000000001Z",
    "2026-11-21T05:00:00z",
    "2026-11-21 05:00:00Z",
    "2099-01-01T00:00:00Z",
    "sha256:" + "0" * 64,
    "sha256:" + "A" * 64,
    "sha512:" + "0" * 128,
    "cafe\u0301",
    "\u202eevil",
    "\ufeffbom",
    "../../etc/passwd",
    "https://in-toto.io/Statement/v1",
    "application/vnd.in-toto+json",
    "https://stella.ops/predicates/function-map/v1",
    "https://stella.ops/predicates/evidence-chunk/v1",
    "https://stella.ops/predicates/bundle-manifest/v1",
]

LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(INTERESTING_INTS),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(INTERESTING_STRINGS),
    st.text(max_size=40),
)
VALUES = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=8,
)

NODE = st.integers(min_value=0, max_value=10_000)
KEYS = st.sampled_from(["_type", "payload", "signatures", "predicate", "extra", ""]) | st.text(
    max_size=12
)

MUTATIONS = st.one_of(
    st.tuples(st.just("replace"), NODE, VALUES),
    st.tuples(st.just("raw"), NODE, st.sampled_from(range(len(RAW_VALUES)))),
    st.tuples(st.just("delete"), NODE),
    st.tuples(st.just("add-key"), NODE, KEYS, VALUES),
    st.tuples(st.just("duplicate-key"), NODE),
    st.tuples(st.just("wrap"), NODE, st.sampled_from(["list", "object"])),
    st.tuples(st.just("string-edit"), NODE, st.text(max_size=8), st.integers(0, 200)),
)

_RAW_MARK = "\u0007raw:"


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, (*path, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_paths(item, (*path, index)))
    return found


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


def _set(root: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    _get(root, path[:-1])[path[-1]] = new
    return root


def mutate(document: Any, mutation: tuple[Any, ...]) -> tuple[Any, list[str]]:
    """(mutated copy, raw texts to splice in); `dumps` turns that into JSON text."""
    root = copy.deepcopy(document)
    raws: list[str] = []
    paths = _paths(root)
    path = paths[mutation[1] % len(paths)]
    kind = mutation[0]
    if kind == "replace":
        root = _set(root, path, mutation[2])
    elif kind == "raw":
        raws.append(RAW_VALUES[mutation[2]])
        root = _set(root, path, f"{_RAW_MARK}0")
    elif kind == "delete" and path:
        parent = _get(root, path[:-1])
        del parent[path[-1]]
    elif kind == "add-key":
        target = _get(root, path)
        if isinstance(target, dict):
            target[mutation[2]] = mutation[3]
        elif isinstance(target, list):
            target.append(mutation[3])
    elif kind == "duplicate-key":
        target = _get(root, path)
        if isinstance(target, dict) and target:
            key = next(iter(target))
            # A second spelling of the first key, spliced after the object's last member.
            raws.append(json.dumps(key) + ":" + json.dumps(target[key], default=str) + "_DUP")
            target[f"{_RAW_MARK}dup"] = None
    elif kind == "wrap":
        target = _get(root, path)
        root = _set(root, path, [target] if mutation[2] == "list" else {"v": target})
    elif kind == "string-edit":
        target = _get(root, path)
        if isinstance(target, str):
            cut = mutation[3] % (len(target) + 1)
            root = _set(root, path, target[:cut] + mutation[2] + target[cut + 1 :])
    return root, raws


def dumps(document: Any, raws: list[str]) -> bytes:
    text = json.dumps(document, ensure_ascii=False)
    for raw in raws:
        if raw.endswith("_DUP"):
            marker = json.dumps(f"{_RAW_MARK}dup", ensure_ascii=False) + ": null"
            text = text.replace(marker, raw[: -len("_DUP")], 1)
        else:
            text = text.replace(json.dumps(f"{_RAW_MARK}0", ensure_ascii=False), raw, 1)
    return text.encode("utf-8", "surrogatepass")


def mutated_json(document: Any, mutations: list[tuple[Any, ...]]) -> bytes:
    """Apply mutations in turn (raw splices only from the last one); return JSON text."""
    raws: list[str] = []
    for mutation in mutations:
        if raws:  # a raw splice must stay the last step: it is text, not a value
            break
        document, raws = mutate(document, mutation)
    return dumps(document, raws)
