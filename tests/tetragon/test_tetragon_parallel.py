"""Ingest with mapping workers (tetragon/parallel.py) writes the chain the in-process ingest
writes, byte for byte: same records in the same order, same chunks, same loss counts, same
named lines, also when the input is hostile or a file cannot be read, however the files are
cut into blocks (cuts inside long lines and pretty-printed events, blocks without a line)."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tetragon_support import (
    APP,
    LIBSSL,
    TetragonProto,
    exec_event,
    exit_event,
    firings,
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
from stella_bundle.evidence.reader import iter_chain_records
from stella_bundle.evidence.seal import parse_seal
from stella_bundle.functionmap.load import load_function_map
from stella_bundle.tetragon import parallel
from stella_bundle.tetragon.events import EventMapper
from stella_bundle.tetragon.ingest import TetragonIngest, TetragonIngestResult
from stella_bundle.tetragon.nodes import NodeIndex
from stella_bundle.tetragon.privacy import PrivacyFilter, PrivacyPolicy
from stella_bundle.tetragon.sources import read_lines, stdin_blocks

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
    paths: list[Path],
    target: Path,
    keys: Any,
    fm_path: Path,
    *,
    workers: bool,
    processes: int | None = None,
) -> TetragonIngestResult:
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
        parallel.feed_files(runner, paths, MAX_LINE, parallel=workers, workers=processes)
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


@pytest.mark.parametrize(
    ("block_bytes", "processes", "max_calls"),
    [(parallel.BLOCK_BYTES, None, parallel.MAX_CALLS), (65_536, 3, 3), (2_999, 2, 1024)],
    ids=["default-blocks", "64k-blocks-3-workers-parts-of-3-calls", "3k-blocks-2-workers"],
)
def test_worker_chain_is_the_in_process_chain(
    tmp_path: Path,
    tetragon_pb: TetragonProto,
    test_keys: Any,
    monkeypatch: pytest.MonkeyPatch,
    block_bytes: int,
    processes: int | None,
    max_calls: int,
) -> None:
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    paths = hostile_export(tetragon_pb, tmp_path)
    alone = ingest(paths, tmp_path / "one", test_keys, fm_path, workers=False)
    monkeypatch.setattr(parallel, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(parallel, "MAX_CALLS", max_calls)  # blocks sent in parts
    fed_here: list[int] = []  # blocks this process fed itself (the workers' calls are not seen)
    block_lines = parallel._block_lines

    def counted(block: Any, max_line_bytes: int, first_number: int) -> Any:
        fed_here.append(first_number)
        return block_lines(block, max_line_bytes, first_number)

    monkeypatch.setattr(parallel, "_block_lines", counted)
    split = ingest(paths, tmp_path / "two", test_keys, fm_path, workers=True, processes=processes)

    assert alone.records > 4000 and alone.chunks > 5  # several blocks and chunks
    assert {"dropped", "redacted", "problems"} <= {k for k, v in alone.to_dict().items() if v}
    assert alone.problems[0] == f"{paths[0]}:1: line:malformed_json"  # named by file and line
    assert len(alone.problems) == 50 and alone.problems[-1].startswith(f"{paths[0]}:")
    assert len(fed_here) < len(parallel._blocks(paths)) // 2  # most blocks by the workers
    mine, theirs = alone.to_dict(), split.to_dict()
    del mine["chain_dir"], theirs["chain_dir"]
    assert theirs == mine
    one, two = chain_contents(alone.chain_dir), chain_contents(split.chain_dir)
    assert list(one) == list(two)
    for name in one:
        assert two[name] == one[name], name


def test_an_export_read_twice_is_recorded_once_by_workers_as_in_process(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live file concatenated after itself (and once more, cut mid-way: a replay that
    stopped): every event of the second and third copies is dropped as a duplicate and
    counted, the chain's records are the single copy's; the workers, which each see some
    blocks only, drop the same events (they send each record's identity; duplicates are
    dropped where their calls are replayed, in input order)."""
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    backup, live = hostile_export(tetragon_pb, tmp_path)
    once = ingest([backup, live], tmp_path / "once", test_keys, fm_path, workers=False)
    data = live.read_bytes()
    cut = data.index(b"\n", len(data) // 2) + 1
    twice = tmp_path / "twice.log"
    twice.write_bytes(data + data + data[:cut])
    monkeypatch.setattr(parallel, "BLOCK_BYTES", 65_536)
    alone = ingest([backup, twice], tmp_path / "one", test_keys, fm_path, workers=False)
    split = ingest([backup, twice], tmp_path / "two", test_keys, fm_path, workers=True)
    repeated = sum(v for k, v in alone.dropped.items() if k.endswith(":duplicate"))
    assert repeated > 1000, alone.dropped
    # Every kind is found again (the exit and usdt events too, fewer).
    assert {k for k in alone.dropped if k.endswith(":duplicate")} >= {
        "process_uprobe:duplicate", "process_kprobe:duplicate", "process_tracepoint:duplicate",
        "process_usdt:duplicate", "process_exec:duplicate", "process_exit:duplicate",
    }  # fmt: skip
    mine, theirs = alone.to_dict(), split.to_dict()
    del mine["chain_dir"], theirs["chain_dir"]
    assert theirs == mine
    assert chain_contents(split.chain_dir) == chain_contents(alone.chain_dir)

    # The single copy's records in the same order, but for the events without an identity
    # (the pretty-printed kprobe has no process, so no exec_id): those are kept each time.
    def records(chain: Path) -> list[dict[str, Any]]:
        return [r for r in iter_chain_records(chain) if r["function_name"] != "tcp_connect"]

    assert records(alone.chain_dir) == records(once.chain_dir)
    assert alone.records - len(records(alone.chain_dir)) > once.records - len(
        records(once.chain_dir)
    )
    sealed: Counter[str] = Counter()
    for path in sorted(alone.chain_dir.glob("*.seal.dsse.json")):
        sealed.update(parse_seal(path.read_bytes(), path).predicate.loss.by_reason)
    assert sealed["dropped.process_uprobe:duplicate"] == alone.dropped["process_uprobe:duplicate"]


def test_duplicates_are_named_by_line_among_refused_lines_by_workers_as_in_process(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event read again is named by its line (file and number), in line order with the
    refused lines, the same by workers (which find duplicates only when the parent replays
    their calls) as in-process: across blocks, in runs of the fast path and one by one."""
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    firsts = firings(to_line(uprobe(tetragon_pb, LIBSSL, "SSL_write")), 3000)
    kprobes = [to_line(kprobe(tetragon_pb, "tcp_connect")) for _ in range(3)]
    lines = [*firsts, *kprobes, *firsts[1000:1030]]  # a run of them in the fast path
    expected = [f"{number}: process_uprobe:duplicate" for number in range(3004, 3034)]
    for number in range(3000):
        if number % 150 == 0:  # a refused line, then events read again, one by one
            lines.append(b"{broken\n")
            expected.append(f"{len(lines)}: line:malformed_json")
            for kind, copy in (
                ("process_uprobe", firsts[number]),
                ("process_kprobe", kprobes[number % 3]),
            ):
                lines.append(copy)
                expected.append(f"{len(lines)}: {kind}:duplicate")
    plain = tmp_path / "tetragon.log"
    plain.write_bytes(b"".join(lines))
    monkeypatch.setattr(parallel, "BLOCK_BYTES", 60_000)
    results = [
        ingest([plain], tmp_path / name, test_keys, fm_path, workers=workers)
        for name, workers in (("one", False), ("two", True))
    ]
    assert len(parallel._blocks([plain])) > 20
    assert (
        results[0].problems == results[1].problems == [f"{plain}:{line}" for line in expected[:50]]
    )
    assert results[0].dropped == results[1].dropped == {
        "line:malformed_json": 20, "process_uprobe:duplicate": 50, "process_kprobe:duplicate": 20
    }  # fmt: skip
    assert chain_contents(results[1].chain_dir) == chain_contents(results[0].chain_dir)


def test_tetragon_drops_land_in_the_chunk_open_when_told_by_workers_as_in_process(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events Tetragon dropped itself (rate_limit_info) are counted in the seal of the chunk
    open when it said so, not all in the last one (where a long follow or a stream put them
    only at its end, lost to a crash before): in-process and by workers alike."""
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    lines = firings(to_line(uprobe(tetragon_pb, LIBSSL, "SSL_write")), 3000)
    for number, dropped in ((2500, 5), (100, 1234)):
        limited = tetragon_pb.events.GetEventsResponse(node_name="node-1")
        limited.rate_limit_info.number_of_dropped_process_events = dropped
        lines.insert(number, to_line(limited))
    plain = tmp_path / "tetragon.log"
    plain.write_bytes(b"".join(lines))
    monkeypatch.setattr(parallel, "BLOCK_BYTES", 100_000)
    results = [
        ingest([plain], tmp_path / name, test_keys, fm_path, workers=workers)
        for name, workers in (("one", False), ("two", True))
    ]
    for result in results:
        seals = [
            parse_seal(path.read_bytes(), path).predicate.loss
            for path in sorted(result.chain_dir.glob("*.seal.dsse.json"))
        ]  # 700 records a chunk
        assert [loss.ring_buffer_dropped for loss in seals] == [1234, 0, 0, 5, 0]
        assert result.upstream_dropped == 1239
    assert chain_contents(results[1].chain_dir) == chain_contents(results[0].chain_dir)


def test_problems_past_the_first_block_are_numbered_in_their_file(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused lines late in a plain file, each in a block of its own: named by the line
    number the file gives them, not the block."""
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    lines = firings(to_line(uprobe(tetragon_pb, LIBSSL, "SSL_write")), 5000)
    for number in (1234, 2345, 4999):
        lines[number - 1] = b"{broken %d\n" % number
    plain = tmp_path / "tetragon.log"
    plain.write_bytes(b"".join(lines))
    monkeypatch.setattr(parallel, "BLOCK_BYTES", 100_000)
    results = [
        ingest([plain], tmp_path / name, test_keys, fm_path, workers=workers)
        for name, workers in (("one", False), ("two", True))
    ]
    expected = [f"{plain}:{n}: line:malformed_json" for n in (1234, 2345, 4999)]
    assert results[0].problems == results[1].problems == expected
    assert results[1].records == 4997


@pytest.mark.parametrize("processes", [1, 2])
def test_pretty_printed_events_across_blocks_and_files(
    tmp_path: Path,
    tetragon_pb: TetragonProto,
    test_keys: Any,
    monkeypatch: pytest.MonkeyPatch,
    processes: int,
) -> None:
    """Pretty-printed events (as Tetragon's documentation shows them) longer than a block,
    one running from a file into the next, one never closed: the blocks a worker cannot
    decide alone are fed here, the others by the workers, and the chain is the same."""
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    copies = iter(firings(to_line(uprobe(tetragon_pb, LIBSSL, "SSL_write")), 130))

    def good(count: int) -> bytes:
        return b"".join(next(copies) for _ in range(count))

    def pretty() -> bytes:
        return json.dumps(json.loads(next(copies)), indent=2).encode() + b"\n"

    last = pretty()
    assert len(last) > 3 * 300 and last.startswith(b"{\n")
    cut = last.index(b"\n", 500) + 1  # the file ends between two of its lines
    first = tmp_path / "first.log"
    first.write_bytes(
        good(30) + pretty() + good(20) + pretty() + pretty() + pretty() + good(40) + last[:cut]
    )
    second = tmp_path / "second.log"
    second.write_bytes(last[cut:] + good(30) + b"{\n" + b'  "time": "x",\n' * 50)
    paths = [first, second]
    monkeypatch.setattr(parallel, "BLOCK_BYTES", 300)
    monkeypatch.setattr(parallel, "MAX_CALLS", 2)
    fed_here: list[int] = []
    block_lines = parallel._block_lines

    def counted(block: Any, max_line_bytes: int, first_number: int) -> Any:
        fed_here.append(first_number)
        return block_lines(block, max_line_bytes, first_number)

    monkeypatch.setattr(parallel, "_block_lines", counted)
    alone = ingest(paths, tmp_path / "one", test_keys, fm_path, workers=False)
    split = ingest(paths, tmp_path / "two", test_keys, fm_path, workers=True, processes=processes)
    assert alone.records == 30 + 1 + 20 + 3 + 40 + 1 + 30
    unclosed = last[cut:].count(b"\n") + 30 + 1  # its `{` line
    assert alone.problems == [f"{second}:{unclosed}: line:malformed_json"]
    assert 0 < len(fed_here) < len(parallel._blocks(paths))
    mine, theirs = alone.to_dict(), split.to_dict()
    del mine["chain_dir"], theirs["chain_dir"]
    assert theirs == mine
    assert chain_contents(split.chain_dir) == chain_contents(alone.chain_dir)


def test_a_block_of_refused_lines_is_one_loss_call(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any
) -> None:
    """A worker keeps losses in a row as one call of their sums (what the writer would add
    up anyway): a block of 100,000 malformed lines costs one call, not 100,000."""
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    loaded = load_function_map(fm_path, None)
    runner = TetragonIngest(
        tmp_path / "ev", "t", load_signer(test_keys.private("collector")),
        EventMapper(NodeIndex(loaded.function_map)),
    )  # fmt: skip
    sent: list[Any] = []

    class Pipe:
        def send(self, message: Any) -> None:
            sent.append(message)

    recorder = parallel._RecordingWriter(runner, Pipe())
    runner._open = recorder.open  # type: ignore[method-assign]
    runner._append_run = recorder.append_run  # type: ignore[method-assign]
    runner._append_record = recorder.append_record  # type: ignore[method-assign]
    good = to_line(uprobe(tetragon_pb, LIBSSL, "SSL_write"))[:-1]
    bad: list[bytes | None] = [b"x", b"[1]", b'{"surprise": {}}', None] * 25_000
    runner.feed_blocks([("f", 1, [*bad, good, *bad])], final=False)
    calls = recorder.take()
    assert not sent  # no part had to go early
    assert [type(call[0]).__name__ if type(call[0]) is bytes else call[0] for call in calls] == [
        "open", "loss", "bytes", "loss",
    ]  # fmt: skip
    assert calls[1][1] == {
        "filtered_out": 100_000,
        "by_reason": {
            "dropped.line:malformed_json": 25_000,
            "dropped.line:not_an_object": 25_000,
            "dropped.unknown:unknown_kind": 25_000,
            "dropped.line:too_long": 25_000,
        },
    }
    assert runner.result.lines == 200_001 and runner.result.records == 1


def test_block_lines_are_the_file_lines() -> None:
    """Byte ranges cut anywhere give the file's lines, numbered, over-long ones skipped."""
    import io
    import itertools
    import random

    from stella_bundle.tetragon.sources import range_blocks, read_lines

    rng = random.Random(12)
    for _ in range(3000):
        pieces = [b"x" * rng.choice([0, 1, 2, 3, 5, 9, 15]) for _ in range(rng.randrange(12))]
        data = b"\n".join(pieces) + (b"\n" if rng.random() < 0.5 else b"")
        limit = rng.choice([1, 3, 4, 8, 100])
        whole = [(line.number, line.data) for line in read_lines(io.BytesIO(data), "f", limit)]
        step = rng.choice([1, 2, 3, 5, 7, 50])
        cuts = [*range(0, len(data), step), len(data)]
        cut: list[tuple[int, bytes | None]] = []
        for start, end in itertools.pairwise(cuts):
            got = range_blocks(io.BytesIO(data), start, end, "f", limit, len(cut) + 1)
            cut += [(n, line) for _, first, lines in got for n, line in enumerate(lines, first)]
        assert cut == whole, (data, limit, step)


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


def test_a_pipe_among_the_files_is_not_opened_to_be_cut(tmp_path: Path) -> None:
    """A named pipe cannot be cut into byte ranges, nor peeked at (what is read is gone, and
    opening it waits for a writer): it stays one block, read by its worker as the
    one-process reader reads it."""
    plain = tmp_path / "plain.log"
    plain.write_bytes(b"{}\n" * 10)
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)
    found: list[Any] = []
    cutter = threading.Thread(target=lambda: found.append(parallel._blocks([fifo, plain])))
    cutter.start()
    cutter.join(timeout=10)
    if cutter.is_alive():  # it opened the pipe: let it go, then fail
        with open(fifo, "wb"):
            pass
        cutter.join()
    assert found == [[parallel._Block(fifo, 0, -1), parallel._Block(plain, 0, 30)]]


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

    def killed(self: TetragonIngest, blocks: Any, **options: Any) -> None:
        os._exit(9)  # in the forked worker only: the parent never calls feed on this path

    monkeypatch.setattr(TetragonIngest, "feed_blocks", killed)
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


class _Trickle(io.RawIOBase):
    """A pipe giving what it holds in pieces of odd sizes (cuts inside lines and events)."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._sizes = itertools.cycle((1, 7, 4096, 65_536, 333, 1 << 20))

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), next(self._sizes), len(self._data))
        buffer[:size] = self._data[:size]
        self._data = self._data[size:]
        return size


def test_stdin_in_blocks_is_stdin_line_by_line(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any
) -> None:
    """`--stdin` reads blocks as they come and feeds them whole: the chain, counts and named
    lines are those of feeding the same lines one at a time."""
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    data = b"".join(gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
                    for p in hostile_export(tetragon_pb, tmp_path))  # fmt: skip
    results = []
    for name in ("lines", "blocks"):
        loaded = load_function_map(fm_path, None)
        runner = TetragonIngest(
            tmp_path / name,
            "t",
            load_signer(test_keys.private("collector")),
            EventMapper(NodeIndex(loaded.function_map), PrivacyFilter()),
            config=WriterConfig(max_records=700),
            source_name="<stdin>",
            max_object_bytes=MAX_LINE,
        )
        stream = io.BufferedReader(_Trickle(data))
        if name == "lines":
            runner.feed(read_lines(stream, "<stdin>", MAX_LINE))
        else:
            runner.feed_blocks(stdin_blocks(stream, MAX_LINE))
        results.append(runner.close())
    lines, blocks = (r.to_dict() for r in results)
    assert lines["records"] > 4000 and lines["problems"][0] == "<stdin>:1: line:malformed_json"
    del lines["chain_dir"], blocks["chain_dir"]
    assert blocks == lines
    assert chain_contents(tmp_path / "blocks" / "t") == chain_contents(tmp_path / "lines" / "t")


def test_parts_cross_the_pipe_as_sent_and_a_cut_pipe_is_eof() -> None:
    """`_Sender` → `_receive`: the calls as they were (runs' lines written raw); a pipe that
    ends inside a part (the worker died while writing) is EOFError, never a short part."""
    calls: list[Any] = [
        ("open", "node"),
        (b'{"a":1}\n{"a":2}', "t1\nt2", 2, "t1", "t2"),
        ("loss", {"filtered_out": 1}),
        (b"x" * 300_000, "t3", 1, "t3", "t3"),
    ]
    expected = [tuple(call) for call in calls]
    read_end, write_end = os.pipe()
    with open(read_end, "rb", buffering=0) as reader, open(write_end, "wb", buffering=0) as writer:
        sending = threading.Thread(target=parallel._Sender(writer).send, args=((calls, None),))
        sending.start()
        assert parallel._receive(reader) == (expected, None)
        sending.join()
        writer.write(parallel._SIZE.pack(1000) + b"only part of a header")
        writer.close()
        with pytest.raises(EOFError):
            parallel._receive(reader)


def test_a_live_input_moves_redaction_counts_into_the_chain_as_it_goes(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any
) -> None:
    """A follower or standard input may run for days: what the privacy filter removed is
    counted into the open chunk every 1,000 events, as for the gRPC stream, so each seal
    says what was redacted up to it (at the end only, a crash lost all of it)."""
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    line = to_line(uprobe(tetragon_pb, LIBSSL, "SSL_write", binary="/home/a/password=x"))
    data = b"".join(firings(line, 3000))
    loaded = load_function_map(fm_path, None)
    runner = TetragonIngest(
        tmp_path / "ev",
        "t",
        load_signer(test_keys.private("collector")),
        EventMapper(NodeIndex(loaded.function_map), PrivacyFilter()),
        config=WriterConfig(max_records=700),
        source_name="<stdin>",
    )
    # A follower's lines: one a block.
    lines = read_lines(io.BytesIO(data), "tetragon.log", MAX_LINE)
    runner.feed_blocks(((line[0], line[1], [line[2]]) for line in lines), live=True)
    result = runner.close()
    assert result.records == 3000 and result.redacted["redacted.path"] == 3000
    redacted = [
        parse_seal(path.read_bytes(), path).predicate.loss.by_reason.get("redacted.path", 0)
        for path in sorted(result.chain_dir.glob("*.seal.dsse.json"))
    ]  # chunks of 700 records: open at lines 1,000, 2,000 and 3,000, the 2nd, 3rd and 5th
    assert redacted == [0, 1000, 1000, 0, 1000]
