"""`stella tetragon policy`: a TracingPolicy naming exactly the map's nodes, valid against
Tetragon's own CRD schema (tests/data/external/tetragon/cilium.io_tracingpolicies.yaml)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from tetragon_support import APP, CRD, LIBSSL, LIBSSL_PURL, shop_map, write_function_map


def strict_crd_schema() -> dict[str, Any]:
    """The CRD's OpenAPI v3 schema, with every object closed: Kubernetes prunes fields a
    structural schema does not declare, so a field it would drop silently is an error here."""
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    schema["properties"]["spec"]["properties"].setdefault("type", "object")
    return schema


def validate(document: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(strict_crd_schema()).validate(document)
    assert document["apiVersion"] == "cilium.io/v1alpha1"
    assert document["kind"] == "TracingPolicy"


def test_policy_names_exactly_the_maps_nodes(tmp_path: Path, run_cli: Any) -> None:
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    output = tmp_path / "policy.yaml"
    result = run_cli("tetragon", "policy", "--function-map", fm_path, "--output", output)
    assert result.exit_code == 0, result.stderr
    document = yaml.safe_load(output.read_text())
    validate(document)
    spec = document["spec"]
    assert document["metadata"]["name"] == "stella-shop"
    uprobes = {entry["path"]: entry["symbols"] for entry in spec["uprobes"]}
    assert uprobes == {APP: ["checkout"], LIBSSL: ["SSL_write", "SSL_read"]}
    app_entry = next(e for e in spec["uprobes"] if e["path"] == APP)
    assert app_entry["binaryDigests"] == ["build-id:" + "aa" * 20]  # the map's build only
    assert app_entry["ignore"] == {"digestVerificationFailure": True}
    assert "binaryDigests" not in next(e for e in spec["uprobes"] if e["path"] == LIBSSL)
    assert spec["usdts"] == [{"path": APP, "provider": "shop", "name": "order_placed"}]
    assert spec["kprobes"] == [{"call": "tcp_connect", "syscall": False}]
    assert sorted((t["subsystem"], t["event"]) for t in spec["tracepoints"]) == [
        ("sched", "sched_process_exec"),
        ("syscalls", "sys_enter_openat"),
    ]
    assert set(spec) == {"uprobes", "usdts", "kprobes", "tracepoints"}


def test_strict_schema_rejects_a_misspelt_field() -> None:
    """The schema check can fail: a field Tetragon does not know is refused."""
    document = {
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "x"},
        "spec": {"uprobes": [{"path": "/bin/true", "symbol": ["main"]}]},
    }
    with pytest.raises(jsonschema.ValidationError):
        validate(document)


def test_nodes_without_binary_are_reported_not_guessed(tmp_path: Path, run_cli: Any) -> None:
    from stella_bundle.formats.function_map import ExpectedNode

    fm_path = tmp_path / "fm.json"
    write_function_map(
        fm_path,
        [
            ("a", "crypto", [ExpectedNode.create(LIBSSL_PURL, "SSL_connect")]),
            ("b", "file", [ExpectedNode.create("pkg:generic/linux-kernel", "sys_openat2")]),
        ],
    )
    output = tmp_path / "policy.yaml"
    result = run_cli(
        "tetragon", "policy", "--function-map", fm_path, "--output", output, "--format", "json"
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [n["symbol"] for n in summary["not_probed"]] == ["SSL_connect"]
    assert "SSL_connect" in result.stderr
    document = yaml.safe_load(output.read_text())
    validate(document)
    assert document["spec"] == {"kprobes": [{"call": "sys_openat2", "syscall": True}]}


def test_bad_function_map_is_refused_with_nothing_written(tmp_path: Path, run_cli: Any) -> None:
    fm_path = tmp_path / "fm.json"
    fm_path.write_text("{not json")
    output = tmp_path / "policy.yaml"
    result = run_cli("tetragon", "policy", "--function-map", fm_path, "--output", output)
    assert result.exit_code == 2
    assert str(fm_path) in result.stderr
    assert not output.exists()
