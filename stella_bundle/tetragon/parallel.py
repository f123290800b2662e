"""Ingest of large export files over several cores: worker processes read, decode and map
byte ranges of the files; this process writes, hashes, compresses and seals the chunks.

The files are cut into blocks (BLOCK_BYTES of a plain file; a gzipped backup whole), block i
goes to worker i mod N, and each worker runs the very same `TetragonIngest.feed` (same
mapper, same refusals) over the lines that begin in its block, against a recording stand-in
for the chain writer. It sends what it was asked to do — canonical record lines (joined),
loss counts, "open the chain for this node" — with the block's counts and named lines. This
process takes the blocks in input order and replays those calls on the real `ChunkWriter`,
so the chain is the one the in-process ingest writes, byte for byte
(tests/tetragon/test_tetragon_parallel.py).

A worker starts every block outside an event: right unless a pretty-printed event (`{`
alone on a line, gathered up to its `}`) runs across the block's edge. A worker whose block
ends inside one sends that event's lines so far; this process takes them over and feeds the
next block itself, line by line (dropping what its worker sent), and the following ones
until a block ends outside an event; from there the workers' calls are right again. Line
numbers in a worker count from its block's start; this process adds the lines of the
file's earlier blocks.

Memory stays bounded: a worker sends its block in parts of at most MAX_CALLS calls (losses
in a row merged into one) and waits in `send` while this process has not taken the last,
so each worker holds at most one part being built and a pipe's worth.

Only finished files take this path, and only large ones (process starts cost more than
they save below MIN_PARALLEL_BYTES); stdin, gRPC and the live follower (whose cursor must
match what was sealed) stay in-process.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import pickle
import signal
import stat
import struct
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple, cast

from ..compression import compression_of
from ..errors import InputError, InternalError, StellaError
from ..evidence.encoding import encode_record
from ..evidence.storage import write_all
from ..evidence.writer import ChunkWriter
from .ingest import (
    _NOT_GATHERING,
    MAX_NAMED_PROBLEMS,
    TetragonIngest,
    TetragonIngestResult,
    _Gathered,
    duplicate_reason,
)
from .sources import Line, LineBlock, file_blocks, range_blocks

# Inputs smaller than this are ingested in-process: starting the workers costs tens of ms.
MIN_PARALLEL_BYTES: Final = 32 * 1024 * 1024
# Bytes of a plain file per block: about 2,500 Tetragon events, about 1.5 MB of records.
BLOCK_BYTES: Final = 4 * 1024 * 1024
# Workers: one per core up to this many (this process writes; beyond a few cores its
# hashing and compression is the limit).
MAX_WORKERS: Final = 4
# Writer calls a worker keeps before sending a part of its block (blocks of good lines hold a
# few; hostile ones, alternating good and refused lines, thousands).
MAX_CALLS: Final = 1024
# The pipe's buffer asked for: a worker runs part of a block ahead of the writer without
# waiting for it (Linux's default pipe buffer, 64 KB, holds a small part of one).
PIPE_BYTES: Final = 1 << 20


class _Block(NamedTuple):
    path: Path
    start: int
    end: int  # -1: the whole file (a gzipped backup, or one that cannot be read)


class _BlockEnd(NamedTuple):
    """A worker's block: its counts, what it refused, and whether it ends inside an event."""

    line_count: int  # lines begun in the block, blank and over-long ones included
    lines: int
    records: int
    dropped: Counter[str]
    counts: Counter[str]  # redactions and ignored fields (the mapper's counts)
    upstream_dropped: int
    problems: list[tuple[str, int, str]]  # (file, line in the block, reason)
    gathered: _Gathered | None  # a pretty-printed event still open at the end: its state
    error: StellaError | None


# A block's writer calls: a run of records as (lines joined by newlines, observed_at values
# joined by newlines, count, least, greatest, their events' identities, the file, their line
# numbers in the block), told apart by its bytes first item; else (name, argument) or
# ("append", record, identity, line). Duplicates are dropped here, on replay
# (`TetragonIngest._append_run`, `_append_record`), in input order, and named by their line.
_Call = tuple[Any, ...]


def parallel_worth_it(paths: list[Path]) -> bool:
    """Two cores or more, and enough bytes to pay for the workers' start."""
    if len(os.sched_getaffinity(0)) < 2:
        return False
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except OSError:
            return False  # the in-process reader names the file it cannot read
    return total >= MIN_PARALLEL_BYTES


def feed_files(
    runner: TetragonIngest,
    paths: list[Path],
    max_line_bytes: int,
    *,
    parallel: bool | None = None,
    workers: int | None = None,
) -> None:
    """`runner.feed(file_lines(paths))`, over worker processes when `parallel` (None: when
    `parallel_worth_it`). The runner ends in the same state either way: same chain, same
    result, same counts."""
    if parallel is None:
        parallel = parallel_worth_it(paths)
    blocks = _blocks(paths) if parallel else []
    if workers is None:
        workers = min(len(os.sched_getaffinity(0)), MAX_WORKERS)
    workers = min(workers, len(blocks))
    if workers < 1:
        runner.feed_blocks(file_blocks(paths, max_line_bytes))
        return
    # fork: the workers inherit the mapper (function map, SBOM index, privacy policy) as it
    # is, with nothing to pickle; they never touch this process's writer or lock.
    context = multiprocessing.get_context("fork")
    started: list[tuple[Any, Any]] = []
    try:
        for number in range(workers):
            # A plain pipe, not a multiprocessing.Queue: the worker pickles and writes in
            # its own thread (a Queue's feeder thread fights the mapping for the GIL).
            results, sender = context.Pipe(duplex=False)
            mine = range(number, len(blocks), workers)
            process = context.Process(
                target=_work,
                args=(runner, blocks, mine, max_line_bytes, sender),
                name=f"stella-tetragon-map-{number}",
            )
            process.daemon = True
            process.start()
            _widen(results)
            sender.close()  # the worker holds the only writing end: its exit ends the pipe
            started.append((process, results))
        _merge(runner, blocks, started, max_line_bytes)
        for process, _ in started:
            process.join()
    finally:
        for process, results in started:
            if process.is_alive():
                process.terminate()
                process.join()
            results.close()


def _blocks(paths: list[Path]) -> list[_Block]:
    """Byte ranges of plain files; a gzipped file, a pipe or device (read once, in order), or
    one that cannot be read (its reader names it) as one block."""
    blocks = []
    for path in paths:
        try:
            info = os.stat(path)
            size = info.st_size if stat.S_ISREG(info.st_mode) else -1
            if size >= 0:
                with open(path, "rb") as handle:
                    head = handle.read(4)
        except OSError:
            size = -1
        if size < 0 or compression_of(head) is not None:
            blocks.append(_Block(path, 0, -1))
            continue
        blocks.extend(
            _Block(path, s, min(s + BLOCK_BYTES, size)) for s in range(0, size, BLOCK_BYTES)
        )
    return blocks


def _block_lines(block: _Block, max_line_bytes: int, first_number: int) -> Iterator[LineBlock]:
    """The lines begun in the block, numbered from `first_number`."""
    if block.end < 0:
        yield from file_blocks([block.path], max_line_bytes)
        return
    path = block.path
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror}", path=path) from exc
    with handle:
        try:
            yield from range_blocks(
                handle, block.start, block.end, str(path), max_line_bytes, first_number
            )
        except OSError as exc:
            raise InputError(f"cannot read: {exc}", path=path) from exc


class _Counted:
    """Blocks of lines passed on, their lines counted."""

    def __init__(self, blocks: Iterator[LineBlock]) -> None:
        self.blocks = blocks
        self.lines = 0

    def __iter__(self) -> Iterator[LineBlock]:
        for block in self.blocks:
            self.lines += len(block[2])
            yield block


def _widen(connection: Any) -> None:
    """A larger pipe buffer when the system allows it (up to fs.pipe-max-size); else as is."""
    with contextlib.suppress(OSError):  # a smaller limit: the worker waits more, same result
        fcntl.fcntl(connection.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _merge(
    runner: TetragonIngest,
    blocks: list[_Block],
    started: list[tuple[Any, Any]],
    max_line_bytes: int,
) -> None:
    """The blocks in input order: each worker's calls replayed on the real writer and its
    counts added, or (an event across the block's edge) the block fed here."""
    base = 0  # lines of the file's earlier blocks
    path = None
    for index, block in enumerate(blocks):
        if block.path != path:
            path, base = block.path, 0
        process, results = started[index % len(started)]
        # The worker began the block outside an event: right unless the previous block
        # ended inside one; then its calls are dropped and the block is fed here.
        taken = not runner.gathering
        end = None
        repeated: list[tuple[str, int, str]] = []  # duplicates met on replay, named by line
        while end is None:  # the block's calls, in one message or more
            try:
                calls, end = _receive(results)
            except EOFError:  # the worker ended without sending the block: killed, crashed
                process.join()
                raise InternalError(
                    f"the Tetragon mapping worker stopped (exit code {process.exitcode})"
                ) from None
            if taken:
                _replay(runner, calls, base, repeated)
        if not taken:
            # Line by line, here, from the state the previous block left.
            runner.feed_blocks(_block_lines(block, max_line_bytes, base + 1), final=False)
        else:
            _adopt(runner, end, base, repeated)
            if end.error is not None:
                raise end.error  # as in-process: what was read before it is written
        base += end.line_count
    runner.finish()


def _replay(
    runner: TetragonIngest, calls: list[_Call], base: int, repeated: list[tuple[str, int, str]]
) -> None:
    """A block's writer calls, in order, on the real writer; the events dropped as read
    before added to `repeated` as (file, line in the file, reason)."""
    writer = runner._writer
    for call in calls:
        first = call[0]
        if type(first) is bytes:
            identities, source, numbers = call[5:]
            for index in runner._append_run(*call):
                repeated.append(
                    (source, base + numbers[index], duplicate_reason(identities[index]))
                )
        elif first == "open":
            # Every block opens the chain at its first event; the first one opens it.
            writer = runner._writer or runner._open(call[1])
        elif first == "loss":
            cast(ChunkWriter, writer).add_loss(**call[1])
        else:  # "append"
            _, record, identity, line = call
            if not runner._append_record(record, identity, line):
                repeated.append((line.source, base + line.number, duplicate_reason(identity)))


def _adopt(
    runner: TetragonIngest, end: _BlockEnd, base: int, repeated: list[tuple[str, int, str]]
) -> None:
    """A block's counts into the runner's; its named lines numbered in their file, in line
    order with the duplicates its replay found (as the in-process ingest names them)."""
    result, mapper = runner.result, runner.mapper
    result.lines += end.lines
    result.records += end.records
    result.dropped.update(end.dropped)
    mapper.counts.update(end.counts)  # the privacy filter's own Counter: updated in place
    mapper.upstream_dropped += end.upstream_dropped
    runner._reported_upstream += end.upstream_dropped  # in the chain already: replayed calls
    problems = result.problems
    named = [(source, base + number, reason) for source, number, reason in end.problems]
    if repeated:  # one file per block: its line numbers order them
        named = sorted(named + repeated, key=lambda item: item[1])
    for source, number, reason in named:
        if len(problems) >= MAX_NAMED_PROBLEMS:
            break
        problems.append(f"{source}:{number}: {reason}")
    if end.gathered is not None:  # an event still open at the block's end: the next block
        lines, began, size = end.gathered  # is fed here, from the same state
        runner._gathered = (lines, Line(began.source, base + began.number, began.data), size)


class _RecordingWriter:
    """The chain writer as a worker sees it: each call kept for the parent to replay.

    `append_record` encodes here (the encoder validates, so a refused record is refused in the
    worker, named as in-process); the parent then adds the encoded line without encoding it
    again. Records travel with their events' identities: duplicates are the parent's to drop
    (a worker sees its blocks only).
    """

    def __init__(self, runner: TetragonIngest, results: Any) -> None:
        self._runner = runner
        self._results = results
        self._block: list[_Call] = []
        self._lines: list[bytes] = []
        self._times: list[str] = []
        self._identities: list[int | None] = []
        self._source = ""  # the block's file, and the line numbers of the records kept
        self._numbers: list[int] = []

    def open(self, node_name: str | None) -> ChunkWriter:
        self._call(("open", node_name))
        self._runner._writer = cast(ChunkWriter, self)
        return cast(ChunkWriter, self)

    def append_run(
        self,
        lines: bytes,
        observed: str,
        count: int,
        earliest: str,
        latest: str,
        identities: list[int | None],
        source: str,
        numbers: Sequence[int],
    ) -> list[int]:
        """In place of `TetragonIngest._append_run` (none dropped here: on replay)."""
        if count == 1:
            self._lines.append(lines)
            self._times.append(observed)
            self._identities.extend(identities)
            self._source = source
            self._numbers.extend(numbers)
            return []
        self._call((lines, observed, count, earliest, latest, identities, source, numbers))
        return []

    def append_record(self, record: dict[str, Any], identity: int | None, line: Line) -> bool:
        """In place of `TetragonIngest._append_record` (none dropped here: on replay)."""
        encoded = encode_record(record)
        if "first_observed_at" in record or "last_observed_at" in record:
            # the writer's window reads these: the record goes
            self._call(("append", record, identity, Line(line.source, line.number, None)))
        else:
            self._lines.append(encoded)
            self._times.append(record["observed_at"])
            self._identities.append(identity)
            self._source = line.source
            self._numbers.append(line.number)
        return True

    def add_loss(self, **counts: Any) -> None:
        block = self._block
        if not self._times and block and block[-1][0] == "loss":
            # Losses in a row land in the same chunk (only appends rotate): one call of
            # their sums, so a block of refused lines holds one call, not one per line.
            last = block[-1][1]
            for name, value in counts.items():
                if name == "by_reason":
                    reasons = last.setdefault("by_reason", {})
                    for reason, count in value.items():
                        reasons[reason] = reasons.get(reason, 0) + count
                else:
                    last[name] = last.get(name, 0) + value
            return
        reasons = counts.get("by_reason")
        self._call(("loss", {**counts, "by_reason": dict(reasons)} if reasons else dict(counts)))

    def _call(self, call: _Call) -> None:
        self._close_run()
        self._block.append(call)
        if len(self._block) >= MAX_CALLS:  # bounded memory: a part of the block goes now
            self._results.send((self.take(), None))

    def _close_run(self) -> None:
        """Records appended one by one (by the general path) travel as a run too."""
        times = self._times
        if times:
            # A canonical line holds no newline (JSON escapes it), nor does a timestamp.
            self._block.append(
                (
                    b"\n".join(self._lines),
                    "\n".join(times),
                    len(times),
                    min(times),
                    max(times),
                    self._identities,
                    self._source,
                    self._numbers,
                )
            )
            self._lines, self._times, self._identities, self._numbers = [], [], [], []

    def take(self) -> list[_Call]:
        self._close_run()
        block, self._block = self._block, []
        return block


# A part on the pipe: the size of its header, the header (the calls, each run's lines replaced
# by their size, and the block's end), then the runs' lines as they are.
_SIZE: Final = struct.Struct("<Q")


class _Sender:
    """A worker's parts written to its pipe as they are: the record lines (nearly all the
    bytes) neither pickled nor, in this process, unpickled (`_receive`), a copy less on each
    side than `Connection.send`."""

    def __init__(self, connection: Any) -> None:
        self._fd = connection.fileno()

    def send(self, message: tuple[list[_Call], _BlockEnd | None]) -> None:
        calls, end = message
        runs = []
        for index, call in enumerate(calls):
            if type(call[0]) is bytes:
                runs.append(call[0])
                calls[index] = (len(call[0]), *call[1:])
        header = pickle.dumps((calls, end), protocol=pickle.HIGHEST_PROTOCOL)
        write_all(self._fd, _SIZE.pack(len(header)) + header)
        for lines in runs:
            write_all(self._fd, lines)


def _receive(connection: Any) -> tuple[list[_Call], _BlockEnd | None]:
    """A part `_Sender` wrote; EOFError when the pipe ends before it does (the worker died)."""
    fd = connection.fileno()
    (header_size,) = _SIZE.unpack(_read_exact(fd, _SIZE.size))
    calls, end = pickle.loads(_read_exact(fd, header_size))
    for index, call in enumerate(calls):
        if type(call[0]) is int:
            calls[index] = (bytes(_read_exact(fd, call[0])), *call[1:])
    return calls, end


def _read_exact(fd: int, size: int) -> bytearray:
    data = bytearray(size)
    view = memoryview(data)
    got = 0
    while got < size:
        count = os.readv(fd, [view[got:]])
        if not count:
            raise EOFError
        got += count
    return data


def _name_in_block(line: Line, reason: str) -> Any:
    """A refused line's parts (the parent numbers it in its file)."""
    return (line.source, line.number, reason)


def _work(
    runner: TetragonIngest, blocks: list[_Block], mine: range, max_line_bytes: int, results: Any
) -> None:
    """In a worker: the parent's feed over each of its blocks, against the recording writer."""
    # The parent handles Ctrl-C and stops this process with SIGTERM (the CLI's handler,
    # inherited by fork, would only set a flag nobody reads here).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sender = _Sender(results)
    recorder = _RecordingWriter(runner, sender)
    # Instance attributes, in this process only: the chain is opened by the parent on replay,
    # and refused lines are numbered there.
    setattr(runner, "_open", recorder.open)  # noqa: B010
    setattr(runner, "_name", _name_in_block)  # noqa: B010
    setattr(runner, "_append_run", recorder.append_run)  # noqa: B010
    setattr(runner, "_append_record", recorder.append_record)  # noqa: B010
    mapper = runner.mapper
    for index in mine:
        block = blocks[index]
        # Every block starts as the input does: outside an event, the chain not yet opened
        # (its first event opens it: the parent opens the chain at the first such call).
        runner._writer = None
        runner._gathered = _NOT_GATHERING
        runner.result = TetragonIngestResult(runner.chain_id, runner.result.chain_dir)
        counts, upstream = Counter(mapper.counts), mapper.upstream_dropped
        error: StellaError | None = None
        lines = _Counted(_block_lines(block, max_line_bytes, 1))
        try:
            runner.feed_blocks(lines, final=False)
        except StellaError as exc:  # an unreadable file: the parent raises it, same message
            error = exc
        except Exception as exc:  # anything else as an internal error (it must pickle)
            error = InternalError(f"{type(exc).__name__}: {exc}")
        result = runner.result
        end = _BlockEnd(
            lines.lines,
            result.lines,
            result.records,
            result.dropped,
            Counter(mapper.counts) - counts,
            mapper.upstream_dropped - upstream,
            cast(list[tuple[str, int, str]], result.problems),
            runner._gathered if runner.gathering else None,
            error,
        )
        sender.send((recorder.take(), end))  # waits while the parent is a block behind
    results.close()
