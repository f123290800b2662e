"""Ingest with the mapping worker (tetragon/parallel.py) writes the chain the in-process ingest
writes, byte for byte: same records in the same order, same chunks, same loss counts, same
named lines, also when the input is hostile or a file cannot be read."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest
from tetragon_support import (
    APP,
    LIBSSL,
    TetragonProto,
    exec_event,
    exit_event,
    kprobe,
    shop_map,
    to_line,
    tracepoint,
    uprobe,
    usdt,
)

from stella_bundle.attest.keys import load_signer
from stella_bundle.errors import InputError, InternalError
from stella_bundle.evidence.config import WriterConfig
from stella_bundle.evidence.seal import parse_seal
from stella_bundle.functionmap.load import load_function_map
from stella_bundle.tetragon import parallel
from stella_bundle.tetragon.events import EventMapper
from stella_bundle.tetragon.ingest import IngestResult, TetragonIngest
from stella_bundle.tetragon.nodes import NodeIndex
from stella_bundle.tetragon.privacy import PrivacyFilter, PrivacyPolicy

pytestmark = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="one CPU: the ingest never starts a worker"
)
MAX_LINE = 4096


def hostile_export(pb: TetragonProto, directory: Path) -> list[Path]:
    """Two files (the first gzipped, as a rotated backup) of mappable events of every kind
    between lines that cannot be records: enough lines for several blocks and chunks."""
    good = to_line(uprobe(pb, APP, "checkout"))
    lines: list[bytes] = [b"{not json\n"]  # the chain is opened by a refusal
    secret = "--password=hunter2 --token abc"
    for i in range(6000):
        second, micro = divmod(i * 137, 1_000_000)
        time = f"2026-01-23T00:10:{second % 60:02d}.{micro:06d}789Z"
        symbol = ("SSL_write", "SSL_read", "not_in_map")[i % 3]
        lines.append(to_line(uprobe(pb, LIBSSL, symbol, time=time, pid=100 + i % 7)))
        if i % 97 == 0:
            lines.append(to_line(kprobe(pb, "__x64_sys_openat", time=time)))
            lines.append(to_line(tracepoint(pb, "syscalls", "sys_enter_openat", time=time)))
            lines.append(to_line(usdt(pb, APP, "shop", "order_placed", time=time)))
            lines.append(to_line(exec_event(pb, arguments=secret, time=time)))
            lines.append(to_line(exit_event(pb, time=time)))
            lines.append(to_line(uprobe(pb, APP, "checkout", binary="/home/alice/password=x")))
        if i % 211 == 0:
            wrong_pid = json.loads(good)
            wrong_pid["process_uprobe"]["process"]["pid"] = "many"
            lines += [
                b"[1, 2]\n",
                b'{"node_name": "n"}\n',
                b'{"process_lsm": {}}\n',
                b'{"rate_limit_info": {"number_of_dropped_process_events": "3"}}\n',
                b'{"surprise": {}}\n',
                b"\xff\xfe garbage\n",
                b"\n",
                b'{"process_uprobe": {"path": "' + b"A" * 5000 + b'"}}\n',  # over MAX_LINE
                json.dumps(wrong_pid).encode() + b"\n",
                b"{\n",  # a pretty-printed event, across lines
                b'  "process_kprobe": {"function_name": "tcp_connect"},\n',
                b'  "time": "2026-01-23T00:10:00Z"\n',
                b"}\n",
            ]
    half = len(lines) // 2
    backup = directory / "tetragon-2026-01-23T00-00-00.000.log.gz"
    backup.write_bytes(gzip.compress(b"".join(lines[:half])))
    live = directory / "tetragon.log"
    live.write_bytes(b"".join(lines[half:]))
    return [backup, live]


def ingest(
    paths: list[Path], target: Path, keys: Any, fm_path: Path, *, workers: bool
) -> IngestResult:
    loaded = load_function_map(fm_path, None)
    policy = PrivacyPolicy.from_section({"allow_arguments": ["url"]}, None)
    runner = TetragonIngest(
        target,
        "tetragon-test",
        load_signer(keys.private("collector")),
        EventMapper(NodeIndex(loaded.function_map), PrivacyFilter(policy)),
        config=WriterConfig(max_records=700),
        source_name=str(paths[-1]),
        max_object_bytes=MAX_LINE,
    )
    try:
        parallel.feed_files(runner, paths, MAX_LINE, parallel=workers)
    except InputError:
        runner.abort()
        raise
    return runner.close()


def chain_contents(chain: Path) -> dict[str, Any]:
    """Every file of the chain; seals as their predicates without the two fields that differ
    between any two runs (when it was sealed, and the link to the previous seal's bytes)."""
    contents: dict[str, Any] = {}
    for path in sorted(chain.iterdir()):
        if path.name.endswith(".seal.dsse.json"):
            predicate = parse_seal(path.read_bytes(), path).predicate.to_dict()
            del predicate["sealed_at"], predicate["previous"]
            contents[path.name] = predicate
        elif not path.name.startswith("."):
            contents[path.name] = path.read_bytes()
    return contents


def test_worker_chain_is_the_in_process_chain(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any
) -> None:
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    paths = hostile_export(tetragon_pb, tmp_path)
    alone = ingest(paths, tmp_path / "one", test_keys, fm_path, workers=False)
    split = ingest(paths, tmp_path / "two", test_keys, fm_path, workers=True)

    assert alone.records > 4000 and alone.chunks > 5  # several blocks and chunks
    assert {"dropped", "redacted", "problems"} <= {k for k, v in alone.to_dict().items() if v}
    assert alone.problems[0] == f"{paths[0]}:1: line:malformed_json"  # named by file and line
    mine, theirs = alone.to_dict(), split.to_dict()
    del mine["chain_dir"], theirs["chain_dir"]
    assert theirs == mine
    one, two = chain_contents(alone.chain_dir), chain_contents(split.chain_dir)
    assert list(one) == list(two)
    for name in one:
        assert two[name] == one[name], name


def test_an_unreadable_file_is_named_and_what_came_before_is_sealed(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any
) -> None:
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    good = tmp_path / "good.log"
    good.write_bytes(to_line(uprobe(tetragon_pb, LIBSSL, "SSL_write")) * 3000)
    corrupt = tmp_path / "t.log.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00garbage-not-deflate")
    errors = []
    for workers, target in ((False, "one"), (True, "two")):
        with pytest.raises(InputError) as caught:
            ingest([good, corrupt], tmp_path / target, test_keys, fm_path, workers=workers)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
    assert str(corrupt) in errors[1] and "corrupt or truncated gzip data" in errors[1]
    assert chain_contents(tmp_path / "two" / "tetragon-test") == chain_contents(
        tmp_path / "one" / "tetragon-test"
    )


def test_only_large_inputs_start_a_worker(tmp_path: Path) -> None:
    small = tmp_path / "small.log"
    small.write_bytes(b"{}\n")
    large = tmp_path / "large.log"
    with open(large, "wb") as handle:
        handle.truncate(parallel.MIN_PARALLEL_BYTES)  # sparse: only its size matters here
    assert not parallel.parallel_worth_it([small])
    assert parallel.parallel_worth_it([small, large])
    assert not parallel.parallel_worth_it([large, tmp_path / "absent.log"])


def test_a_worker_that_dies_is_an_error_not_a_short_chain(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    good = tmp_path / "good.log"
    good.write_bytes(to_line(uprobe(tetragon_pb, LIBSSL, "SSL_write")) * 10)

    def killed(self: TetragonIngest, lines: Any) -> None:
        os._exit(9)  # in the forked worker only: the parent never calls feed on this path

    monkeypatch.setattr(TetragonIngest, "feed", killed)
    with pytest.raises(InternalError, match=r"worker stopped \(exit code 9\)"):
        ingest([good], tmp_path / "two", test_keys, fm_path, workers=True)


def test_cli_map_worker_switch(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, run_cli: Any
) -> None:
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    paths = hostile_export(tetragon_pb, tmp_path)
    outputs = []
    for switch in ("--no-map-worker", "--map-worker"):
        target = tmp_path / switch.strip("-")
        result = run_cli(
            "tetragon", "ingest", *paths, "--function-map", fm_path, "--target", target,
            "--key", test_keys.private("collector"), "--max-records", "700", "--chain-id", "t",
            "--format", "json", switch,
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        summary = json.loads(result.stdout)
        del summary["chain_dir"]
        outputs.append((summary, result.stderr, chain_contents(target / "t")))
    assert outputs[0] == outputs[1]
    refused = run_cli(
        "tetragon", "ingest", "--stdin", "--target", tmp_path / "x", "--key",
        test_keys.private("collector"), "--map-worker",
    )  # fmt: skip
    assert refused.exit_code == 2
    assert "--map-worker" in refused.stderr
