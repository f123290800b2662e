"""No function above cyclomatic complexity 20 (`radon cc -n D` finds nothing) outside a short
list, each entry with its reason (issue 10's acceptance).

A new function over the bound fails; so does an entry of the list that no longer is over it
(remove it: the list only shrinks).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# "path::Class.function" (or "path::function") → why it stays one function for now.
HOT_PATH = "hot path: one call per record or event; split, the calls cost what was won by inlining"
BEING_CHANGED = "under concurrent change (issue 13 collector/agent work); to split once it lands"
PERF_WORK = "under concurrent performance work (issues 11, 15); to split once it lands"
ALLOWED: dict[str, str] = {
    "stella_bundle/formats/record.py::validate_record": HOT_PATH,
    "stella_bundle/evidence/encoding.py::_fast_accept": HOT_PATH,
    "stella_bundle/coverage/scan.py::ObservationAggregator._fold_typed": HOT_PATH,
    "stella_bundle/coverage/scan.py::ObservationAggregator._fast_fold": HOT_PATH,
    "stella_bundle/tetragon/events.py::EventMapper.map_uprobe_run": HOT_PATH,
    "stella_bundle/tetragon/sources.py::ExportFollower.lines": (
        "one loop over a followed file's states (rotation, truncation, partial line); "
        "a state machine split across functions reads worse"
    ),
    "stella_bundle/collector/loader.py::ProbeRuntime.load": BEING_CHANGED,
    "stella_bundle/collector/runtime_containerd.py::_container": BEING_CHANGED,
    "stella_bundle/collector/run.py::prepare": BEING_CHANGED,
    "stella_bundle/collector/features.py::detect": BEING_CHANGED,
    "stella_bundle/collector/session.py::Collector.start": BEING_CHANGED,
    "stella_bundle/agent/config.py::load_agent_settings": BEING_CHANGED,
    "stella_bundle/bundle/build.py::build_bundle": PERF_WORK,
    "stella_bundle/store/postgres.py::PostgresStore.store_chunks": PERF_WORK,
}


def complex_functions() -> dict[str, int]:
    """Every function of rank D or worse (complexity above 20), by name → complexity."""
    result = subprocess.run(
        [sys.executable, "-m", "radon", "cc", "-n", "D", "-j", "stella_bundle"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = {}
    for path, blocks in json.loads(result.stdout).items():
        # radon reports a file it cannot parse as {"error": ...}: that must fail, not pass.
        assert isinstance(blocks, list), f"{path}: {blocks}"
        for block in blocks:
            name = (
                f"{block['classname']}.{block['name']}" if block.get("classname") else block["name"]
            )
            found[f"{path}::{name}"] = block["complexity"]
    return found


def test_no_function_above_complexity_20_outside_the_list() -> None:
    found = complex_functions()
    new = {name: value for name, value in found.items() if name not in ALLOWED}
    assert not new, (
        "above cyclomatic complexity 20 (split it, or list it with a reason): "
        + ", ".join(f"{name} ({value})" for name, value in sorted(new.items()))
    )
    stale = sorted(ALLOWED.keys() - found.keys())
    assert not stale, f"no longer above 20, remove from ALLOWED: {', '.join(stale)}"


def test_every_listed_function_has_a_reason() -> None:
    assert all(reason.strip() for reason in ALLOWED.values())
