"""Tetragon's export file rotated (renamed to `<stem>-<time><ext>`, one backup gzipped, as its
daemon does) while being followed, and read back from its backups: every line exactly once."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from tetragon_support import APP, TetragonProto, shop_map, to_line, uprobe

from stella_bundle.evidence.reader import iter_chain_records

LINES = 400
ROTATE_AT = (90, 200, 310)


def lines_for(pb: TetragonProto) -> list[bytes]:
    template = json.loads(to_line(uprobe(pb, APP, "checkout")))
    out = []
    for index in range(LINES):
        template["process_uprobe"]["process"]["pid"] = index
        template["process_uprobe"]["process"]["exec_id"] = f"exec-{index}"  # another process
        out.append(json.dumps(template).encode() + b"\n")
    return out


def tetragon_writer(live: Path, lines: list[bytes], done: threading.Event) -> None:
    """Writes like Tetragon's exporter: appends, rotates by rename, compresses one backup."""
    handle = open(live, "ab")  # noqa: SIM115 - reopened at each rotation
    try:
        for index, line in enumerate(lines):
            if index in ROTATE_AT:
                handle.close()
                stamp = f"2026-01-23T00-0{ROTATE_AT.index(index)}-00.000"
                backup = live.with_name(f"{live.stem}-{stamp}{live.suffix}")
                os.rename(live, backup)
                if index == ROTATE_AT[1]:
                    with open(backup, "rb") as source, gzip.open(str(backup) + ".gz", "wb") as out:
                        shutil.copyfileobj(source, out)
                    backup.unlink()
                handle = open(live, "ab")  # noqa: SIM115 - reopened at each rotation
            if index % 37 == 0:  # a line written in two parts: the reader sees half first
                handle.write(line[:50])
                handle.flush()
                time.sleep(0.02)
                handle.write(line[50:])
            else:
                handle.write(line)
            handle.flush()
            if index % 10 == 0:
                time.sleep(0.005)
    finally:
        handle.close()
        done.set()


def pids(evidence: Path) -> list[int]:
    (chain,) = [p for p in evidence.iterdir() if p.is_dir()]
    return sorted(record["pid"] for record in iter_chain_records(chain))


def test_followed_across_three_rotations_every_line_once(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, run_cli: Any
) -> None:
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    live = tmp_path / "export" / "tetragon.log"
    live.parent.mkdir()
    lines = lines_for(tetragon_pb)
    live.write_bytes(lines[0])
    evidence = tmp_path / "evidence"
    done = threading.Event()

    def write_once_followed() -> None:
        # A follower starts at the live file: Tetragon must not rotate before it is there
        # (it has read line 0 once its chain's open chunk exists).
        deadline = time.monotonic() + 60
        while not list(evidence.glob("*/*.partial")) and time.monotonic() < deadline:
            time.sleep(0.01)
        tetragon_writer(live, lines[1:], done)

    writer = threading.Thread(target=write_once_followed, daemon=True)
    writer.start()
    result = run_cli(
        "tetragon", "ingest", "--export-file", live, "--follow", "--idle-exit", "2.5",
        "--function-map", fm_path, "--target", evidence, "--key",
        test_keys.private("collector"), "--format", "json",
    )  # fmt: skip
    writer.join(timeout=30)
    assert done.is_set()
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["dropped"] == {}
    assert pids(evidence) == list(range(LINES))
    names = sorted(p.name for p in live.parent.iterdir())
    assert len(names) == 4 and sum(n.endswith(".gz") for n in names) == 1

    # The same export read afterwards from its backups (oldest first) and the live file.
    again = tmp_path / "evidence-again"
    result = run_cli(
        "tetragon", "ingest", "--export-file", live, "--function-map", fm_path,
        "--target", again, "--key", test_keys.private("collector"), "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    (chain,) = [p for p in again.iterdir() if p.is_dir()]
    assert [r["pid"] for r in iter_chain_records(chain)] == list(range(LINES))


def test_truncated_in_place_is_read_from_the_start(
    tmp_path: Path, tetragon_pb: TetragonProto
) -> None:
    from stella_bundle.tetragon.sources import ExportFollower

    live = tmp_path / "tetragon.log"
    lines = lines_for(tetragon_pb)
    live.write_bytes(b"".join(lines[:5]))
    # Idle for 2 s: the end. The truncation comes once the first five lines were read (the
    # follower opens the file lazily: truncated before that, it would never see them).
    follower = ExportFollower(live, idle_seconds=2.0, poll_seconds=0.02)
    seen: list[int] = []
    read_five = threading.Event()

    def truncate_later() -> None:
        read_five.wait(60)
        time.sleep(0.1)
        live.write_bytes(b"".join(lines[5:7]))  # copytruncate: same inode, shorter

    threading.Thread(target=truncate_later, daemon=True).start()
    for line in follower.lines():
        assert line.data is not None
        seen.append(json.loads(line.data)["process_uprobe"]["process"]["pid"])
        if len(seen) == 5:
            read_five.set()
    assert seen == list(range(7))


def test_restart_resumes_from_the_cursor_across_a_gzipped_rotation(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, run_cli: Any
) -> None:
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    lines = lines_for(tetragon_pb)
    live = tmp_path / "export" / "tetragon.log"
    live.parent.mkdir()
    cursor = tmp_path / "cursor.json"
    evidence = tmp_path / "evidence"

    def follow() -> dict[str, Any]:
        result = run_cli(
            "tetragon", "ingest", "--export-file", live, "--follow", "--idle-exit", "0.3",
            "--cursor", cursor, "--function-map", fm_path, "--target", evidence,
            "--chain-id", "node-1", "--key", test_keys.private("collector"), "--format", "json",
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        return dict(json.loads(result.stdout))

    live.write_bytes(b"".join(lines[:50]) + lines[50][:40])  # the last line not finished yet
    assert follow()["records"] == 50
    with open(live, "ab") as handle:
        handle.write(lines[50][40:] + b"".join(lines[51:80]))
    backup = live.with_name("tetragon-2026-01-23T00-00-00.000.log")
    os.rename(live, backup)
    with open(backup, "rb") as source, gzip.open(str(backup) + ".gz", "wb") as out:
        shutil.copyfileobj(source, out)
    backup.unlink()
    live.write_bytes(b"".join(lines[80:100]))
    second = follow()
    assert second["records"] == 50 and second["dropped"] == {}
    assert follow()["records"] == 0  # nothing new: nothing read twice
    with open(live, "ab") as handle:
        handle.write(b"".join(lines[100:110]))
    assert follow()["records"] == 10
    assert pids(evidence) == list(range(110))

    # The saved file is gone (backups pruned meanwhile): the gap is said, not hidden.
    for path in live.parent.iterdir():
        path.unlink()
    live.write_bytes(b"".join(lines[200:205]))
    lost = follow()
    assert lost["records"] == 5
    assert lost["dropped"] == {"follow:saved_position_not_found": 1}


def test_sigterm_stops_a_follower_cleanly(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any
) -> None:
    import signal
    import subprocess
    import sys

    from stella_bundle.evidence.seal import parse_seal

    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    live = tmp_path / "tetragon.log"
    live.write_bytes(b"".join(lines_for(tetragon_pb)[:20]))
    cursor = tmp_path / "cursor.json"
    evidence = tmp_path / "evidence"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "stella_bundle", "tetragon", "ingest", "--export-file",
            str(live), "--follow", "--cursor", str(cursor), "--function-map", str(fm_path),
            "--target", str(evidence), "--key", str(test_keys.private("collector")),
            "--format", "json",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not list(evidence.glob("*/*.partial")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert json.loads(out)["records"] == 20
    (seal_path,) = evidence.glob("*/*.seal.dsse.json")
    assert parse_seal(seal_path.read_bytes()).predicate.final
    assert json.loads(cursor.read_text())["offset"] == live.stat().st_size
