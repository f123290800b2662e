"""Large but valid numbers keep the report; numbers past RFC 8785's range are refused at input.

Every integer of every schema is bounded by MAX_SAFE_INTEGER (2**53 - 1, the range RFC 8785
and I-JSON carry exactly). A chain whose seals carry loss counters of exactly 2**53 - 1 (the
largest valid value, summed over counters and seals far past it) and records aggregated to
2**53 - 1 hits twice on one node must still give a written report from `bundle verify` and a
JSON report from `signals verify-chain`: sums saturate at the bound instead of failing after the
verdict is known. One past the bound is refused at input naming the field: a trust root version,
a function map window (a seal's loss of 2**53 or 2**64: tests/adversarial/
test_adversarial_seal_model.py, through both `signals verify-chain` and `bundle verify`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.canonical import MAX_SAFE_INTEGER, canonical_bytes
from stella_bundle.schema import KINDS, load_schema
from tests.adversarial.chain_surgery import Predicate, Records, rewrite_chain
from tests.adversarial.test_adversarial_time import _build
from tests.bundle.bundle_helpers import BundleInputs, make_inputs, snapshot
from tests.conftest import CliResult

COUNTERS = ("ring_buffer_dropped", "sampled_out", "filtered_out", "torn_records")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, test_keys: Any) -> BundleInputs:
    return make_inputs(tmp_path_factory.mktemp("big-inputs"), test_keys)


def _copy(pristine: BundleInputs, tmp_path: Path) -> tuple[Path, Path]:
    inputs = tmp_path / "inputs"
    shutil.copytree(pristine.directory, inputs)
    return inputs, inputs / "evidence" / "host-a"


def _loss_everywhere(value: int) -> Callable[[dict[int, Predicate]], None]:
    def edit(seals: dict[int, Predicate]) -> None:
        for seal in seals.values():
            for counter in COUNTERS:
                seal["loss"][counter] = value
            seal["loss"]["by_reason"] = {"gap.test": value}

    return edit


def _verify_bundle(
    inputs: Path, pristine: BundleInputs, tmp_path: Path, keys: Any, run_cli: Any
) -> tuple[CliResult, Path]:
    bundle = tmp_path / "big.stella.bundle.tgz"
    _build(inputs, pristine, bundle, keys)
    out = tmp_path / "work" / "out"
    before = snapshot(tmp_path)
    result = run_cli(
        "bundle", "verify", bundle, "--trust-root", keys.trust_root, "--output-dir", out
    )
    created = {p for p in snapshot(tmp_path) - before if not p.startswith("work")}
    assert not created, f"written outside the output directory: {created}"
    return result, out


def test_largest_loss_counters_keep_both_reports(
    pristine: BundleInputs, tmp_path: Path, test_keys: Any, run_cli: Callable[..., CliResult]
) -> None:
    inputs, chain = _copy(pristine, tmp_path)
    rewrite_chain(chain, test_keys.signer("collector"), seals=_loss_everywhere(MAX_SAFE_INTEGER))

    chain_result = run_cli(
        "signals", "verify-chain", chain, "--trust-root", test_keys.trust_root, "--format", "json"
    )
    assert chain_result.exit_code == 0, chain_result.stdout + chain_result.stderr
    report = json.loads(chain_result.stdout)["chains"][0]
    assert report["loss"]["ring_buffer_dropped"] == MAX_SAFE_INTEGER  # saturated, not summed
    canonical_bytes(report)  # every integer within the range RFC 8785 carries

    result, out = _verify_bundle(inputs, pristine, tmp_path, test_keys, run_cli)
    assert result.exit_code in (0, 1), result.stderr
    assert "canonicalise" not in result.stderr
    written = json.loads((out / "verification-report.json").read_text())["predicate"]
    evidence = written["evidence"][0]
    assert evidence["events_lost"] == MAX_SAFE_INTEGER
    assert evidence["loss"]["sampled_out"] == MAX_SAFE_INTEGER


def test_records_aggregated_past_the_bound_keep_the_report(
    pristine: BundleInputs, tmp_path: Path, test_keys: Any, run_cli: Callable[..., CliResult]
) -> None:
    """Two records of one node counting 2**53 - 1 hits each: the node's total saturates."""
    inputs, chain = _copy(pristine, tmp_path)

    def edit(records: Records, seals: dict[int, Predicate]) -> None:
        for record in records[1][:2]:
            record["node_hash"] = records[1][0]["node_hash"]
            record["function_name"] = records[1][0]["function_name"]
            record["count"] = MAX_SAFE_INTEGER

    rewrite_chain(chain, test_keys.signer("collector"), records=edit)
    result, out = _verify_bundle(inputs, pristine, tmp_path, test_keys, run_cli)
    assert result.exit_code in (0, 1), result.stderr
    written = json.loads((out / "verification-report.json").read_text())
    canonical_bytes(written)
    mapped = run_cli(
        "function-map", "verify", "--function-map", inputs / pristine.function_map.name,
        "--evidence", inputs / "evidence", "--format", "json",
    )  # fmt: skip
    assert mapped.exit_code in (0, 1), mapped.stderr
    canonical_bytes(json.loads(mapped.stdout))


def test_trust_root_version_past_the_bound_is_refused(
    tmp_path: Path, test_keys: Any, run_cli: Callable[..., CliResult], pristine: BundleInputs
) -> None:
    document = json.loads(Path(test_keys.trust_root).read_text())
    document["version"] = MAX_SAFE_INTEGER + 1
    root = tmp_path / "trust-root.json"
    root.write_text(json.dumps(document))
    result = run_cli("signals", "verify-chain", pristine.evidence / "host-a", "--trust-root", root)
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "version" in lines[0], result.stderr


@pytest.mark.parametrize(("window", "refused"), [(MAX_SAFE_INTEGER, False), (2**53, True)])
def test_function_map_window_at_and_past_the_bound(
    window: int,
    refused: bool,
    pristine: BundleInputs,
    tmp_path: Path,
    run_cli: Callable[..., CliResult],
) -> None:
    statement = json.loads(pristine.function_map.read_text())
    statement["predicate"]["coverage"]["window_seconds"] = window
    fm = tmp_path / "fm.json"
    fm.write_text(json.dumps(statement))
    result = run_cli(
        "function-map", "verify", "--function-map", fm, "--evidence", pristine.evidence,
        "--format", "json",
    )  # fmt: skip
    if refused:
        assert result.exit_code == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "window_seconds" in lines[0], result.stderr
    else:
        assert result.exit_code in (0, 1), result.stderr
        canonical_bytes(json.loads(result.stdout))


def _integer_nodes(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "integer" or (isinstance(kind, list) and "integer" in kind):
            found.append((path, node))
        for key, value in node.items():
            found += _integer_nodes(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _integer_nodes(value, f"{path}/{index}")
    return found


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_schema_integer_is_within_the_safe_range(kind: str) -> None:
    """Each integer of each published schema has both bounds, within ±(2**53 - 1)."""
    for path, node in _integer_nodes(load_schema(kind)):
        assert "minimum" in node and "maximum" in node, f"{kind}{path} is unbounded"
        assert -MAX_SAFE_INTEGER <= node["minimum"] <= node["maximum"] <= MAX_SAFE_INTEGER, path
