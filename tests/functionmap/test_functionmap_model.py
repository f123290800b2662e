"""The function-map model: exact round trips, nodes(), and checks that mirror the schema."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from stella_bundle.attest.statement import FUNCTION_MAP_PREDICATE, make_statement
from stella_bundle.errors import InputError
from stella_bundle.formats.function_map import FunctionMap
from stella_bundle.functionmap.load import load_function_map
from stella_bundle.schema import validate_document
from tests.functionmap.functionmap_helpers import make_map


def test_round_trip_is_exact_and_nodes_are_unique(java_sbom: Path) -> None:
    fmap = make_map(java_sbom)
    document = fmap.to_dict()
    assert FunctionMap.from_dict(json.loads(json.dumps(document))).to_dict() == document
    hashes = [n.node_hash for n in fmap.nodes()]
    assert (
        len(hashes)
        == len(set(hashes))
        == len({n.node_hash for p in fmap.expected_paths for n in p.nodes})
    )


def _big_predicate(java_sbom: Path) -> dict:
    base = make_map(java_sbom).to_dict()
    template = base["expected_paths"][0]
    base["expected_paths"] = [
        {**copy.deepcopy(template), "path_id": f"p{i:04d}"} for i in range(700)
    ]
    return base


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: p.update(tag="Crypto!"), "tag"),
        (lambda p: p.update(priority=-1), "priority"),
        (lambda p: p["nodes"][0].update(purl="libssl"), "purl"),
        (lambda p: p["nodes"][0].update(probe_types=["uprobe", "uprobe"]), "probe_types"),
        (lambda p: p["nodes"][0].update(node_hash="sha256:" + "0" * 64), "node_hash"),
        (lambda p: p.update(extra=1), "extra"),
        # Each value of another type or out of range (the plain path's quick read too).
        (lambda p: p.update(priority=True), "priority"),
        (lambda p: p.update(priority=2**53), "priority"),
        (lambda p: p.update(optional=1), "optional"),
        (lambda p: p.update(path_id=""), "path_id"),
        (lambda p: p.update(path_id=7), "path_id"),
        (lambda p: p.update(tag=None), "tag"),
        (lambda p: p.update(nodes=[]), "nodes"),
        (lambda p: p.update(nodes={}), "nodes"),
        (lambda p: p.pop("optional"), "optional"),
    ],
)
def test_large_maps_check_every_path(java_sbom: Path, tmp_path: Path, mutate, field: str) -> None:
    predicate = _big_predicate(java_sbom)
    mutate(predicate["expected_paths"][650])  # beyond the paths jsonschema sees
    statement = make_statement(
        [{"name": "x", "digest": {"sha256": "0" * 64}}], FUNCTION_MAP_PREDICATE, predicate
    )
    path = tmp_path / "fm.json"
    path.write_text(json.dumps(statement))  # not canonical: 2**53 has no canonical form
    with pytest.raises(InputError) as caught:
        load_function_map(path)
    assert caught.value.field is not None and field in caught.value.field
    assert "650" in caught.value.field
    if field != "node_hash":  # a hash that does not match is beyond what a schema can say
        with pytest.raises(InputError):  # the schema agrees when it sees the whole map
            validate_document("function-map", predicate)


def test_not_a_function_map(tmp_path: Path) -> None:
    path = tmp_path / "fm.json"
    path.write_text(json.dumps({"hello": "world"}))
    with pytest.raises(InputError) as caught:
        load_function_map(path)
    assert str(path) in str(caught.value)
