"""Real events from Tetragon's repository (tests/data/external/tetragon/examples/): its export
test data, one event per line, and documentation examples, pretty-printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tetragon_support import PROTO_ROOT

from stella_bundle.evidence.reader import iter_chain_records
from stella_bundle.formats.node_hash import node_hash

EXAMPLES = PROTO_ROOT / "tetragon" / "examples"


def test_real_exports_and_documented_events(tmp_path: Path, test_keys: Any, run_cli: Any) -> None:
    files = [
        EXAMPLES / name
        for name in (
            "events.json",
            "cat_process_exec.json",
            "cat_process_kprobe.json",
            "cat_process_exit.json",
            "process_kprobe.json",
            "process_connect.json",
        )
    ]
    evidence = tmp_path / "evidence"
    result = run_cli(
        "tetragon", "ingest", *files, "--target", evidence, "--key",
        test_keys.private("collector"), "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["records"] == 7
    assert summary["dropped"] == {"unknown:unknown_kind": 1}  # process_connect (old API)
    assert f"{files[-1]}:1: unknown:unknown_kind" in result.stderr
    (chain,) = [p for p in evidence.iterdir() if p.is_dir()]
    assert chain.name == "tetragon-my-node"
    records = list(iter_chain_records(chain))
    first = records[0]  # testdata/events.json: no `time`, so the exec's start time
    assert first["observed_at"] == "2022-10-18T03:16:18.273546Z"
    assert (
        first["container_id"] == "19a02291e106ce6227b684197be232ea57c4e1a5ab2604a12608c325d701c7f4"
    )
    assert first["image_digest"] == (
        "sha256:8e86f744bfea165fd4ce68caa05abc96500f40130b857773186401926af7e9e6"
    )
    assert (first["pod_name"], first["namespace"]) == ("tiefighter", "default")
    assert first["details"]["path"] == "/usr/bin/netserver"
    kprobe = next(r for r in records if r["probe_type"] == "kprobe" and r["kind"] == "function")
    assert kprobe["function_name"] == "__x64_sys_read"
    assert kprobe["node_hash"] == node_hash("pkg:generic/linux-kernel", "__x64_sys_read")
    assert kprobe["observed_at"] == "2022-02-01T18:01:56.410000Z"
    assert kprobe["container_id"] == (
        "e6af4dff4ea3b8d50313c59fbaa442e377da35671e79f43b8dc53c5efcc9b659"
    )  # docker:// removed
    assert "args" not in kprobe.get("details", {})  # dropped by default
    assert summary["redacted"]["redacted.argument"] >= 3


def test_pretty_printed_object_cut_short_is_refused_by_its_first_line(
    tmp_path: Path, test_keys: Any, run_cli: Any
) -> None:
    text = (EXAMPLES / "cat_process_kprobe.json").read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) // 2])
    result = run_cli(
        "tetragon", "ingest", cut, "--target", tmp_path / "e", "--key",
        test_keys.private("collector"), "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["dropped"] == {"line:malformed_json": 1}
    assert f"{cut}:1: line:malformed_json" in result.stderr


def test_a_cgroup_throttled_by_tetragon_is_a_gap_in_the_seal(
    tmp_path: Path, test_keys: Any, run_cli: Any
) -> None:
    """Tetragon's documented throttle events (cgroup-rate.md): from THROTTLE_START to its
    THROTTLE_STOP Tetragon sends none of the cgroup's events, how many unknown; the seal says
    so (`gap.tetragon_throttled`), beside the count of both notices refused as events."""
    from stella_bundle.evidence.seal import parse_seal

    export = EXAMPLES / "cgroup_rate_throttle.json"
    evidence = tmp_path / "evidence"
    result = run_cli(
        "tetragon", "ingest", export, "--target", evidence, "--key",
        test_keys.private("collector"), "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dropped"] == {
        "process_throttle:throttle_start": 1,
        "process_throttle:unsupported_kind": 1,
    }
    assert summary["problems"] == [
        f"{export}:1: process_throttle:throttle_start",
        f"{export}:9: process_throttle:unsupported_kind",
    ]
    (chain,) = [p for p in evidence.iterdir() if p.is_dir()]
    assert chain.name == "tetragon-ubuntu-22"
    (seal,) = chain.glob("*.seal.dsse.json")
    loss = parse_seal(seal.read_bytes(), seal).predicate.loss
    assert loss.filtered_out == 2
    assert loss.by_reason["gap.tetragon_throttled"] == 1
