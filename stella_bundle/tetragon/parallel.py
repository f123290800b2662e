"""Ingest of large export files over two cores: a worker process reads, decodes and maps the
lines; this process writes, hashes, compresses and seals the chunks.

Decoding and mapping are two thirds of the CPU per event (docs/tetragon.md), the writer most of
the rest, and one process runs them one after the other. Here the worker runs the very same
`TetragonIngest.feed` (same mapper, same refusals, same `file:line` names) against a recording
stand-in for the chain writer, and sends what it was asked to do — canonical record lines,
loss counts, "open the chain for this node" — in blocks over a pipe. This process
replays those calls in order on the real `ChunkWriter`, so the chain is the one the in-process
ingest writes, byte for byte (tests/tetragon/test_tetragon_parallel.py), and memory stays
bounded: the worker waits in `send` while this process has not taken the last block, so at
most PIPE_BYTES and two blocks of BLOCK_CALLS calls exist at a time.

Only finished files take this path, and only large ones (a process start costs more than it
saves below MIN_PARALLEL_BYTES); stdin, gRPC and the live follower (whose cursor must match
what was sealed) stay in-process.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any, Final, cast

from ..errors import InternalError, StellaError
from ..evidence.encoding import encode_record
from ..evidence.writer import ChunkWriter
from .ingest import TetragonIngest
from .sources import file_lines

# Inputs smaller than this are ingested in-process: starting the worker costs tens of ms.
MIN_PARALLEL_BYTES: Final = 32 * 1024 * 1024
# Writer calls per block (about 0.6 KB each for a uprobe record: blocks of about 300 KB), and
# the pipe's buffer asked for: the worker runs up to a few blocks ahead of the writer without
# waiting for it (Linux's default pipe buffer, 64 KB, holds not even one block).
BLOCK_CALLS: Final = 512
PIPE_BYTES: Final = 1 << 20


# A block is a list of calls: a run of `append_encoded` calls as (lines joined by newlines,
# observed_at values joined by newlines), told apart by its bytes first item; else
# (name, argument[, error]).
_Call = tuple[Any, ...]


def parallel_worth_it(paths: list[Path]) -> bool:
    """Two cores or more, and enough bytes to pay for the worker's start."""
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
) -> None:
    """`runner.feed(file_lines(paths))`, over two processes when `parallel` (None: when
    `parallel_worth_it`). The runner ends in the same state either way: same chain, same
    result, same counts."""
    if parallel is None:
        parallel = parallel_worth_it(paths)
    if not parallel:
        runner.feed(file_lines(paths, max_line_bytes))
        return
    # fork: the worker inherits the mapper (function map, SBOM index, privacy policy) as it
    # is, with nothing to pickle; it never touches the parent's writer or lock.
    context = multiprocessing.get_context("fork")
    # A plain pipe, not a multiprocessing.Queue: the worker pickles and writes in its own
    # thread (a Queue's feeder thread fights the mapping for the GIL: slower than one process).
    calls, sender = context.Pipe(duplex=False)
    worker = context.Process(
        target=_work, args=(runner, paths, max_line_bytes, sender), name="stella-tetragon-map"
    )
    worker.daemon = True
    worker.start()
    _widen(calls)
    sender.close()  # the worker holds the only writing end: its exit ends the pipe (EOFError)
    try:
        _replay(runner, calls, worker)
        worker.join()
    finally:
        if worker.is_alive():
            worker.terminate()
            worker.join()
        calls.close()


def _widen(connection: Any) -> None:
    """A larger pipe buffer when the system allows it (up to fs.pipe-max-size); else as is."""
    with contextlib.suppress(OSError):  # a smaller limit: the worker waits more, same result
        fcntl.fcntl(connection.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _replay(runner: TetragonIngest, calls: Any, worker: Any) -> None:
    """The worker's writer calls, in order, on the real writer; then its counts."""
    writer = runner._writer
    append_encoded = writer.append_encoded if writer is not None else None
    while True:
        try:
            block = calls.recv()
        except EOFError:  # the worker ended without its last word ("done"): killed, crashed
            worker.join()
            raise InternalError(
                f"the Tetragon mapping worker stopped (exit code {worker.exitcode})"
            ) from None
        for call in block:
            first = call[0]
            if type(first) is bytes:
                for line, observed_at in zip(first.split(b"\n"), call[1].split("\n"), strict=True):
                    append_encoded(line, observed_at)  # type: ignore[misc]
            elif first == "open":
                writer = runner._open(call[1])
                append_encoded = writer.append_encoded
            elif first == "loss":
                cast(ChunkWriter, writer).add_loss(**call[1])
            elif first == "append":
                cast(ChunkWriter, writer).append(call[1])
            else:  # "done": the worker's result and counts become the runner's
                _adopt(runner, call[1])
                if call[2] is not None:
                    raise call[2]  # as in-process: what was read before it is written
                return


def _adopt(runner: TetragonIngest, state: dict[str, Any]) -> None:
    result, mapper = runner.result, runner.mapper
    done = state["result"]
    result.lines, result.records = done.lines, done.records
    result.dropped, result.problems = done.dropped, done.problems
    mapper.counts.clear()  # the privacy filter's own Counter: updated in place
    mapper.counts.update(state["counts"])
    mapper.upstream_dropped = state["upstream_dropped"]
    runner._reported_redactions = state["reported_redactions"]
    runner._reported_upstream = state["reported_upstream"]


class _RecordingWriter:
    """The chain writer as the worker sees it: each call kept for the parent to replay.

    `append` encodes here (the encoder validates, so a refused record is refused in the worker,
    named as in-process); the parent then adds the encoded line without encoding it again.
    """

    def __init__(self, runner: TetragonIngest, calls: Any) -> None:
        self._runner = runner
        self._calls = calls
        self._block: list[_Call] = []
        self._lines: list[bytes] = []
        self._times: list[str] = []

    def open(self, node_name: str | None) -> ChunkWriter:
        self._call(("open", node_name))
        self._runner._writer = cast(ChunkWriter, self)
        return cast(ChunkWriter, self)

    def append_encoded(self, line: bytes, observed_at: str) -> None:
        self._lines.append(line)
        self._times.append(observed_at)
        if len(self._lines) >= BLOCK_CALLS:
            self.send()

    def append(self, record: dict[str, Any]) -> None:
        line = encode_record(record)
        if "first_observed_at" in record or "last_observed_at" in record:
            self._call(("append", record))  # the writer's window reads these: the record goes
        else:
            self.append_encoded(line, record["observed_at"])

    def add_loss(self, **counts: Any) -> None:
        self._call(("loss", counts))

    def _call(self, call: _Call) -> None:
        self._close_run()
        self._block.append(call)
        if len(self._block) >= BLOCK_CALLS:  # e.g. a file of bad lines: one loss call each
            self.send()

    def _close_run(self) -> None:
        """Consecutive appends travel as one joined run: pickling two strings per block
        instead of two objects per record is most of what the hand-over costs."""
        if self._lines:
            # A canonical line holds no newline (JSON escapes it), nor does a timestamp.
            self._block.append((b"\n".join(self._lines), "\n".join(self._times)))
            self._lines, self._times = [], []

    def send(self) -> None:
        self._close_run()
        if self._block:
            self._calls.send(self._block)  # waits while the writer is a block behind
            self._block = []


def _work(runner: TetragonIngest, paths: list[Path], max_line_bytes: int, calls: Any) -> None:
    """In the worker: the parent's feed, against the recording writer."""
    # The parent handles Ctrl-C and stops this process with SIGTERM (the CLI's handler,
    # inherited by fork, would only set a flag nobody reads here).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    recorder = _RecordingWriter(runner, calls)
    if runner._writer is not None:  # the parent's chain is already open: write to it
        runner._writer = cast(ChunkWriter, recorder)
    # Instance attribute, in this process only: the chain is opened by the parent on replay.
    setattr(runner, "_open", recorder.open)  # noqa: B010
    error: StellaError | None = None
    try:
        runner.feed(file_lines(paths, max_line_bytes))
    except StellaError as exc:  # an unreadable file: the parent raises it, same message
        error = exc
    except Exception as exc:  # anything else as an internal error (it must pickle)
        error = InternalError(f"{type(exc).__name__}: {exc}")
    recorder.send()
    state = {
        "result": runner.result,
        "counts": Counter(runner.mapper.counts),
        "upstream_dropped": runner.mapper.upstream_dropped,
        "reported_redactions": runner._reported_redactions,
        "reported_upstream": runner._reported_upstream,
    }
    calls.send([("done", state, error)])
    calls.close()
