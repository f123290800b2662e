"""Hostile input: malformed lines, a 50 MB line, unknown kinds, wrong types: each counted or
refused with its line named, never a crash, never an unbounded read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tetragon_support import (
    APP,
    LIBSSL,
    TetragonProto,
    firings,
    kprobe,
    shop_map,
    to_line,
    uprobe,
)

from stella_bundle.evidence.reader import iter_chain_records


def ingest_json(run_cli: Any, keys: Any, tmp_path: Path, export: Path, *extra: Any) -> Any:
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    result = run_cli(
        "tetragon", "ingest", export, "--function-map", fm_path, "--target",
        tmp_path / "evidence", "--key", keys.private("collector"), "--format", "json", *extra,
    )  # fmt: skip
    return result


def test_malformed_and_mistyped_lines_are_counted_by_line(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, run_cli: Any
) -> None:
    good, wrong, last = firings(to_line(uprobe(tetragon_pb, APP, "checkout")), 3)
    good_event = json.loads(good)
    wrong_time = dict(good_event, time=12345)
    wrong_pid = json.loads(wrong)
    wrong_pid["process_uprobe"]["process"]["pid"] = "many"
    wrong_process = json.loads(good)
    wrong_process["process_uprobe"]["process"] = ["x"]
    lines = [
        good,  # 1
        b"{not json\n",  # 2
        b"\xff\xfe garbage\n",  # 3
        b"[1, 2, 3]\n",  # 4
        b'{"node_name": "n"}\n',  # 5: no event
        json.dumps(wrong_time).encode() + b"\n",  # 6
        json.dumps(wrong_pid).encode() + b"\n",  # 7: pid ignored, record kept
        json.dumps(wrong_process).encode() + b"\n",  # 8: process ignored, counted
        b'{"process_uprobe": {"path": 7, "symbol": "checkout"}}\n',  # 9
        b"\n",  # blank: not an event
        b"[" * 100000 + b"\n",  # 11: deep nesting
        last,  # 12
    ]
    export = tmp_path / "t.log"
    export.write_bytes(b"".join(lines))
    result = ingest_json(run_cli, test_keys, tmp_path, export)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["records"] == 4
    assert summary["lines"] == 11
    assert summary["dropped"] == {
        "line:malformed_json": 3,
        "line:not_an_object": 1,
        "line:no_event": 1,
        "process_uprobe:missing_or_invalid:time": 1,
        "process_uprobe:missing_or_wrong_type:path": 1,
    }
    for number in (2, 3, 4, 5, 6, 9, 11):
        assert f"{export}:{number}: " in result.stderr
    assert summary["redacted"] == {
        "ignored.process_uprobe.process:wrong_type": 1,
        "ignored.process_uprobe.process.pid:wrong_type": 1,
    }
    (chain,) = (tmp_path / "evidence").iterdir()
    records = list(iter_chain_records(chain))
    assert [r.get("pid") for r in records] == [4242, None, None, 4242]


@pytest.mark.slow
def test_a_50_mb_line_is_refused_by_number_without_being_loaded(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any
) -> None:
    good, other = firings(to_line(uprobe(tetragon_pb, APP, "checkout")), 2)
    huge = b'{"process_uprobe": {"path": "' + b"A" * (50 * 1024 * 1024) + b'"}}\n'
    export = tmp_path / "t.log"
    export.write_bytes(good + huge + other)
    small = tmp_path / "small.log"
    small.write_bytes(good + other)
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)

    def run(path: Path, target: str) -> tuple[dict[str, Any], str, int]:
        """`stella tetragon ingest` in a child process; its peak RSS in KiB."""
        code = (
            "import resource, subprocess, sys\n"
            "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
            "print(p.returncode)\nsys.stdout.write(p.stdout)\nsys.stderr.write(p.stderr)\n"
        )
        done = subprocess.run(
            [
                sys.executable, "-c", code, sys.executable, "-m", "stella_bundle", "tetragon",
                "ingest", str(path), "--function-map", str(fm_path), "--target",
                str(tmp_path / target), "--key", str(test_keys.private("collector")),
                "--format", "json",
            ],
            capture_output=True, text=True, timeout=300, env=dict(os.environ),
        )  # fmt: skip
        rss, returncode, rest = done.stdout.split("\n", 2)
        assert returncode == "0", done.stderr
        return json.loads(rest), done.stderr, int(rss)

    summary, stderr, peak = run(export, "e1")
    _, _, baseline = run(small, "e2")
    assert summary["records"] == 2
    assert summary["dropped"] == {"line:too_long": 1}
    assert f"{export}:2: line:too_long" in stderr
    # The line is skipped in bounded blocks: far less than its 50 MiB is ever held.
    assert peak - baseline < 24 * 1024, (peak, baseline)


def test_line_limit_is_configurable(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, run_cli: Any
) -> None:
    good, other = firings(to_line(uprobe(tetragon_pb, APP, "checkout")), 2)
    padded = json.loads(good)
    padded["process_uprobe"]["message"] = "x" * 5000
    export = tmp_path / "t.log"
    export.write_bytes(good + json.dumps(padded).encode() + b"\n" + other)
    config = tmp_path / "stellaops.yaml"
    config.write_text("tetragon:\n  max_line_bytes: 4096\n")
    result = ingest_json(run_cli, test_keys, tmp_path, export, "--config", config)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["dropped"] == {"line:too_long": 1}


def test_gzip_backup_corrupt_is_a_clear_error(tmp_path: Path, test_keys: Any, run_cli: Any) -> None:
    export = tmp_path / "t.log.gz"
    export.write_bytes(b"\x1f\x8b\x08\x00garbage-not-deflate")
    result = ingest_json(run_cli, test_keys, tmp_path, export)
    assert result.exit_code == 2
    assert str(export) in result.stderr and "corrupt or truncated gzip data" in result.stderr


def test_missing_input_is_refused(tmp_path: Path, test_keys: Any, run_cli: Any) -> None:
    result = ingest_json(run_cli, test_keys, tmp_path, tmp_path / "absent.log")
    assert result.exit_code == 2
    assert "absent.log" in result.stderr


@pytest.mark.parametrize("form", ["far", "near", "offset", "many"])
def test_events_dated_after_the_bridge_clock_are_dropped_and_the_chain_verifies(
    form: str, tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, run_cli: Any
) -> None:
    # One event from a node whose clock is ahead (or a forged year 9999) was sealed with the
    # rest: the chunk's window ended after its sealed_at, so `verify-chain` and `bundle verify`
    # refused the whole chunk (record_after_seal, evidence_from_future). Such an event is now
    # dropped as an invalid time and counted in the seal; the chain verifies.
    import datetime as dt

    ahead = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=20)
    future = {
        "far": ["9999-12-31T23:59:59.999999999Z"],
        "near": [ahead.strftime("%Y-%m-%dT%H:%M:%S.123456789Z")],
        "offset": [(ahead + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00")],
        # Many events of one future second: the fast paths cache a second once checked.
        "many": [ahead.strftime("%Y-%m-%dT%H:%M:%S.%f000Z")] * 50,
    }[form]
    lines = [to_line(uprobe(tetragon_pb, APP, "checkout"))]
    for time in future:
        event = json.loads(to_line(uprobe(tetragon_pb, APP, "checkout")))
        event["time"] = time
        lines.append(json.dumps(event).encode() + b"\n")
    lines.append(to_line(uprobe(tetragon_pb, APP, "checkout")))
    export = tmp_path / "t.log"
    export.write_bytes(b"".join(lines))
    result = ingest_json(run_cli, test_keys, tmp_path, export)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["records"] == 2
    assert summary["dropped"] == {"process_uprobe:missing_or_invalid:time": len(future)}
    (chain,) = (tmp_path / "evidence").iterdir()
    seal = json.loads((chain / "0000000001.seal.dsse.json").read_bytes())
    import base64

    loss = json.loads(base64.b64decode(seal["payload"]))["predicate"]["loss"]
    assert loss["by_reason"]["dropped.process_uprobe:missing_or_invalid:time"] == len(future)
    assert loss["filtered_out"] == len(future)
    verified = run_cli("signals", "verify-chain", chain, "--trust-root", test_keys.trust_root)
    assert verified.exit_code == 0, verified.stdout + verified.stderr


def test_an_event_read_twice_is_recorded_once_and_counted(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, run_cli: Any
) -> None:
    """An export concatenated (or a stream replayed): the second reading of an event (same
    exec_id, thread, time, probe and policy) is dropped and counted, in the result and in
    the seal's loss; events that differ in any of those are distinct firings, all kept."""
    base = uprobe(tetragon_pb, APP, "checkout", time="2026-01-23T00:10:00.000000001Z")
    other_thread = type(base)()
    other_thread.CopyFrom(base)
    other_thread.process_uprobe.process.tid.value = 99
    other_time = type(base)()
    other_time.CopyFrom(base)
    other_time.time.FromJsonString("2026-01-23T00:10:00.000000002Z")  # one nanosecond later
    other_symbol = type(base)()
    other_symbol.CopyFrom(base)
    other_symbol.process_uprobe.path = LIBSSL
    other_symbol.process_uprobe.symbol = "SSL_write"
    distinct = [to_line(m) for m in (base, other_thread, other_time, other_symbol)]
    assert len(set(distinct)) == 4
    export = tmp_path / "t.log"
    # Read again, the second time re-serialised with another key order (a replay).
    again = [
        json.dumps(dict(reversed(json.loads(line).items()))).encode() + b"\n" for line in distinct
    ]
    export.write_bytes(b"".join(distinct + again + distinct[:1]))
    result = ingest_json(run_cli, test_keys, tmp_path, export)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["records"] == 4 and summary["lines"] == 9
    assert summary["dropped"] == {"process_uprobe:duplicate": 5}
    # Each later reading named by its line, as a refused line is.
    assert summary["problems"] == [
        f"{export}:{number}: process_uprobe:duplicate" for number in range(5, 10)
    ]
    (chain,) = (tmp_path / "evidence").iterdir()
    assert len(list(iter_chain_records(chain))) == 4
    from stella_bundle.evidence.seal import parse_seal

    lost = [parse_seal(p.read_bytes(), p).predicate.loss for p in chain.glob("*.seal.dsse.json")]
    assert sum(loss.filtered_out for loss in lost) == 5
    assert sum(loss.by_reason.get("dropped.process_uprobe:duplicate", 0) for loss in lost) == 5


def test_events_without_an_identity_are_never_taken_for_duplicates(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, run_cli: Any
) -> None:
    # No exec_id (an export filtered by field): nothing names the firing, both are kept.
    line = json.loads(to_line(uprobe(tetragon_pb, APP, "checkout")))
    del line["process_uprobe"]["process"]["exec_id"]
    export = tmp_path / "t.log"
    export.write_bytes((json.dumps(line) + "\n").encode() * 2)
    result = ingest_json(run_cli, test_keys, tmp_path, export)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["records"] == 2 and summary["dropped"] == {}


def test_a_field_under_both_its_names_is_refused_by_line(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, run_cli: Any
) -> None:
    """A protobuf reader takes a field by its proto name or its json_name, and refuses it given
    both (which value is the event's?): the line is refused, named, counted, as protobuf does;
    the same field by one name, either, is read."""
    one, two, three, four = (
        json.loads(line) for line in firings(to_line(uprobe(tetragon_pb, APP, "checkout")), 4)
    )
    one["process_uprobe"]["process"]["execId"] = "another"
    two["processUprobe"] = two["process_uprobe"]
    three["process_uprobe"]["process"]["execId"] = three["process_uprobe"]["process"].pop("exec_id")
    four["nodeName"] = four.pop("node_name")
    export = tmp_path / "t.log"
    export.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in (one, two, three, four)))
    result = ingest_json(run_cli, test_keys, tmp_path, export)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["records"] == 2
    assert summary["problems"] == [
        f"{export}:1: process_uprobe:repeated_field:exec_id",
        f"{export}:2: process_uprobe:repeated_field:process_uprobe",
    ]
    (chain,) = (tmp_path / "evidence").iterdir()
    assert [r["host"] for r in iter_chain_records(chain)] == ["node-1", "node-1"]


def test_a_line_of_two_events_is_refused_and_an_unknown_key_beside_one_is_not(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, run_cli: Any
) -> None:
    """GetEventsResponse holds one event (a oneof): a line holding two (a shipper's merge) was
    recorded as its first and the second dropped unseen; it is refused whole and named, as
    protobuf refuses it. A key the API does not know beside an event (a newer field) is
    ignored, wherever it stands, as protobuf's reader ignores it."""
    up, kp, late = firings(to_line(uprobe(tetragon_pb, APP, "checkout")), 3)
    two = json.loads(up)
    two.update(json.loads(to_line(kprobe(tetragon_pb, "tcp_connect"))))
    newer = {"future_field": {"x": 1}, **json.loads(kp)}
    export = tmp_path / "t.log"
    export.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in (two, newer)) + late)
    result = ingest_json(run_cli, test_keys, tmp_path, export)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["records"] == 2
    assert summary["problems"] == [f"{export}:1: line:more_than_one_event"]


def test_a_camelcase_event_read_twice_is_recorded_once(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, run_cli: Any
) -> None:
    """An event's identity is read from the event in Tetragon's own form: the same event in
    lowerCamelCase (a re-serialised export) read twice, or once in each form, is one event."""
    from google.protobuf import json_format

    message = uprobe(tetragon_pb, APP, "checkout")
    message.process_uprobe.process.tid.value = 7
    camel = json.dumps(json_format.MessageToDict(message)).encode() + b"\n"
    assert b'"execId"' in camel and b'"processUprobe"' in camel
    export = tmp_path / "t.log"
    export.write_bytes(camel + camel + to_line(message))
    result = ingest_json(run_cli, test_keys, tmp_path, export)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["records"] == 1
    assert summary["dropped"] == {"process_uprobe:duplicate": 2}
