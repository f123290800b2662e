"""Chunk scans beside the archive pass: worker processes, effects kept in archive order.

The verifier's pass is one streaming read of the archive, but a chunk's record scan (zstd,
msgspec, the map verifier's fold) costs far more than reading the chunk's compressed bytes.
Chunks of up to `IN_MEMORY_MAX` compressed bytes are therefore read whole and scanned by a
worker process (`records.scan_chunk`, the same function the pass runs inline), while the
pass reads on; so are the view's 1 MiB blocks (`records.view_block`: its order check and
tally), the pass hashing them meanwhile. Whatever a member does to the verdict (a step failing, a chain event) is an
*effect*: applied at once when nothing is in flight, else queued behind the scans in flight,
so effects happen in archive order exactly as in a pass without workers (the first failure of
a step, which the report names, is the same). A chunk the archive refuses (a zstd bomb) is
raised when its turn comes, before any later member's own refusal.
"""

from __future__ import annotations

import gc
import io
import multiprocessing
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from ..bundle.reader import ArchiveMember
from ..digests import HashingReader
from ..heap import keep_freed_blocks
from .records import ChunkScan, ChunkSpec, scan_chunk

# A chunk member up to this size (compressed) is read into memory for a worker; a larger one
# is scanned inline as it streams (the writer rotates at 64 MiB of NDJSON, ~1-5 MiB of zstd).
IN_MEMORY_MAX = 8 * 1024 * 1024
# Bytes handed to workers (chunks, 1 MiB blocks of the view) whose results are not folded
# yet: the pass waits for the oldest beyond it. Enough to keep two workers busy; small enough
# that the pass's memory does not depend on the archive (pickling holds a second copy).
IN_FLIGHT_MAX = 4 * 1024 * 1024

T = TypeVar("T")


# Archives from this size on get worker processes (forking them costs ~10-20 ms each).
# Tests set it to 0 to run every verification with workers too.
PARALLEL_MIN_BYTES = 256 * 1024


@dataclass(frozen=True)
class WorkLimits:
    parallel_min_bytes: int | None = None  # default: PARALLEL_MIN_BYTES
    workers: int | None = None  # default: the CPUs this process may run on


def _scan_bytes(data: bytes, name: str, spec: ChunkSpec) -> ChunkScan:
    return scan_chunk(io.BytesIO(data), name, spec)


def _ready() -> None:
    """A no-op task that makes the pool fork its workers at once."""


class ChunkWork:
    """Scans submitted to worker processes and the effects that must follow them, in order."""

    def __init__(self, archive_bytes: int = 0, limits: WorkLimits | None = None) -> None:
        limits = limits or WorkLimits()
        workers = limits.workers or len(os.sched_getaffinity(0))
        self._pool: ProcessPoolExecutor | None = None
        self._queue: deque[tuple[Future[Any] | None, Callable[..., None], int]] = deque()
        self._in_flight = 0
        least = (
            PARALLEL_MIN_BYTES if limits.parallel_min_bytes is None else limits.parallel_min_bytes
        )
        if workers >= 2 and archive_bytes >= least:
            # Forked now, before the archive reader starts its inflating thread; frozen objects
            # are left alone by the children's collector (no copy-on-write of the whole heap).
            # The workers inherit the allocator's thresholds: blocks freed are reused.
            keep_freed_blocks()
            gc.freeze()
            try:
                self._pool = ProcessPoolExecutor(
                    workers, mp_context=multiprocessing.get_context("fork")
                )
                self._pool.submit(_ready).result()
            finally:
                gc.unfreeze()

    def scan(
        self,
        member: ArchiveMember,
        stream: HashingReader,
        spec: ChunkSpec,
        then: Callable[[ChunkScan], None],
    ) -> Callable[[], ChunkScan]:
        """Scan a chunk member (reading it to its end now) and call `then` with its scan when
        every earlier effect has been applied. Returns what gives the scan itself at once
        (waiting for it when a worker has it), for a reader that needs it before its turn."""
        if self._pool is None or member.size > IN_MEMORY_MAX:
            scan = scan_chunk(stream, member.name, spec)
            self.later(lambda: then(scan))
            return lambda: scan
        data = stream.read(member.size)
        future = self._pool.submit(_scan_bytes, data, member.name, spec)
        self._enqueue(future, then, len(data))
        return future.result

    def submit(
        self, work: Callable[..., T], args: tuple[Any, ...], then: Callable[[T], None], size: int
    ) -> None:
        """`then(work(*args))` in order: `work` runs in a worker process when there are some
        (`size` bytes held meanwhile, bounded by `IN_FLIGHT_MAX`), else here and now."""
        if self._pool is None:
            result = work(*args)
            self.later(lambda: then(result))
            return
        self._enqueue(self._pool.submit(work, *args), then, size)

    def _enqueue(self, future: Future[T], then: Callable[[T], None], size: int) -> None:
        self._queue.append((future, then, size))
        self._in_flight += size
        while self._in_flight > IN_FLIGHT_MAX and self._queue:
            self._apply_next()

    def later(self, effect: Callable[[], None], size: int = 0) -> None:
        """Apply `effect` now, or after the scans in flight and the effects queued behind them
        (holding `size` bytes of document meanwhile: counted against `IN_FLIGHT_MAX`)."""
        if not self._queue:
            effect()
            return
        self._queue.append((None, effect, size))
        self._in_flight += size
        while self._in_flight > IN_FLIGHT_MAX and self._queue:
            self._apply_next()

    def pump(self) -> None:
        """Apply what is ready at the head of the queue, without waiting."""
        while self._queue and (self._queue[0][0] is None or self._queue[0][0].done()):
            self._apply_next()

    def drain(self) -> None:
        """Wait for every scan and apply every effect, in order."""
        while self._queue:
            self._apply_next()

    def _apply_next(self) -> None:
        future, effect, size = self._queue.popleft()
        self._in_flight -= size
        if future is None:
            effect()
        else:
            effect(future.result())

    def close(self) -> None:
        self._queue.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
