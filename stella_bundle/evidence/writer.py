"""ChunkWriter: append validated records to a chain; rotate, seal, recover after a crash.

The open chunk is an append-only `<seq>.ndjson.partial` (canonical NDJSON, fdatasync'd every
`flush_interval_seconds`) with its collector identity and loss counters beside it in
`<seq>.partial.json`. The compressed chunk is built alongside in a temp file, so sealing only
finishes the zstd frame, signs, and renames (DESIGN.md §7).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import zstandard
from securesystemslib.signer import Signer

from ..canonical import canonical_bytes
from ..errors import ChainBusyError, InputError, StellaError
from ..formats.seal import (
    ChunkContent,
    CollectorInfo,
    LossCounters,
    ProbeFailure,
    ProbeReattachment,
    SealPredicate,
    SealReason,
)
from ..fsutil import fsync_directory
from ..timeutil import format_timestamp, utc_now
from .config import PROBE_ATTACH_FAILED_REASON, WriterConfig
from .encoding import compiled_encode, encode_record
from .layout import LOCK_NAME, chunk_name, partial_name, partial_state_name, validate_chain_id
from .recovery import ChainHead, RecoveredChunk, recover_chain
from .seal import build_seal
from .storage import commit_chunk, remove_quietly, storage_error, temp_path, write_all, write_temp
from .window import ObservationWindow

__all__ = ["ChunkWriter", "WriterConfig"]

# Appended lines are handed to the kernel (not yet fsync'd) once this many bytes are pending:
# batches the hashing and compression work and bounds the memory held between flushes.
_DRAIN_BYTES = 1 << 20


class _OpenChunk:
    """The chunk being written: partial file, running digests, compressor, window, loss."""

    __slots__ = (
        "bytes",
        "chunk_file",
        "chunk_temp",
        "collector",
        "compressed_sha",
        "compressor",
        "content_sha",
        "drained_bytes",
        "loss",
        "loss_dirty",
        "opened_at",
        "partial_fd",
        "partial_path",
        "pending",
        "probe_failures",
        "probe_reattachments",
        "records",
        "sequence",
        "state_path",
        "unsynced",
        "window",
    )

    def __init__(
        self,
        chain_dir: Path,
        sequence: int,
        zstd_level: int,
        opened_at: float,
        collector: CollectorInfo,
    ) -> None:
        self.sequence = sequence
        self.opened_at = opened_at
        self.partial_path = chain_dir / partial_name(sequence)
        self.state_path = chain_dir / partial_state_name(sequence)
        self.chunk_temp = temp_path(chain_dir, chunk_name(sequence))
        self.collector = collector
        self.loss = LossCounters()
        self.probe_failures: list[ProbeFailure] = []
        self.probe_reattachments: list[ProbeReattachment] = []
        self.loss_dirty = False
        self.window = ObservationWindow()
        self.records = 0
        self.bytes = 0
        self.pending: list[bytes] = []
        self.drained_bytes = 0
        self.unsynced = False
        self.content_sha = hashlib.sha256()
        self.compressed_sha = hashlib.sha256()
        self.compressor = zstandard.ZstdCompressor(level=zstd_level).compressobj()
        self.partial_fd = -1
        self.chunk_file: IO[bytes] | None = None

    def create_files(self) -> None:
        # The state first: a partial without its state would lose the collector identity.
        write_temp(self.state_path, self.state_bytes())
        self.loss_dirty = False
        self.partial_fd = os.open(
            self.partial_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644
        )
        self.chunk_file = open(self.chunk_temp, "wb", buffering=1 << 20)  # noqa: SIM115
        fsync_directory(self.partial_path.parent)

    def state_bytes(self) -> bytes:
        state: dict[str, Any] = {"collector": self.collector.to_dict(), "loss": self.loss.to_dict()}
        if self.probe_failures:
            state["probe_failures"] = [failure.to_dict() for failure in self.probe_failures]
        if self.probe_reattachments:
            state["probe_reattachments"] = [item.to_dict() for item in self.probe_reattachments]
        return canonical_bytes(state)

    def write_compressed(self, data: bytes) -> None:
        if data:
            assert self.chunk_file is not None
            self.chunk_file.write(data)
            self.compressed_sha.update(data)

    def drain(self) -> None:
        """Hand pending lines to the kernel and to the digest and compressor."""
        if not self.pending:
            return
        self.pending.append(b"")
        data = b"\n".join(self.pending)
        self.pending.clear()
        self.drained_bytes = self.bytes
        write_all(self.partial_fd, data)
        self.unsynced = True
        self.content_sha.update(data)
        self.write_compressed(self.compressor.compress(data))

    def sync(self) -> None:
        self.drain()
        if self.unsynced:
            os.fdatasync(self.partial_fd)
            self.unsynced = False
        if self.loss_dirty:
            temp = self.state_path.with_name("." + self.state_path.name + ".tmp")
            write_temp(temp, self.state_bytes())
            os.replace(temp, self.state_path)
            self.loss_dirty = False

    def finish_compressed(self) -> str:
        self.drain()
        self.write_compressed(self.compressor.flush())
        assert self.chunk_file is not None
        self.chunk_file.flush()
        os.fsync(self.chunk_file.fileno())
        self.chunk_file.close()
        self.chunk_file = None
        return self.compressed_sha.hexdigest()

    def close_files(self) -> None:
        if self.partial_fd >= 0:
            os.close(self.partial_fd)
            self.partial_fd = -1
        if self.chunk_file is not None:
            with contextlib.suppress(OSError):
                self.chunk_file.close()
            self.chunk_file = None


class ChunkWriter:
    """Writes one evidence chain; one writer per chain (an exclusive lock on the directory).

    Not thread-safe: call it from one thread (the collector's event loop).
    """

    def __init__(
        self,
        chain_dir: Path,
        chain_id: str,
        signer: Signer,
        config: WriterConfig,
        collector: CollectorInfo,
        lock_fd: int,
        head: ChainHead,
        recovered: list[RecoveredChunk],
        clock: Callable[[], float],
    ) -> None:
        self.chain_dir = chain_dir
        self.chain_id = chain_id
        self.config = config
        self.collector = collector
        self.recovered = recovered
        self._signer = signer
        self._lock_fd = lock_fd
        self._head = head
        self._clock = clock
        self._max_bytes = config.max_size_bytes
        # No limit: a count no chunk reaches.
        self._records_limit = config.max_records or sys.maxsize
        self._max_age = config.max_age_seconds
        self._flush_interval = config.flush_interval_seconds
        self._chunk: _OpenChunk | None = None
        self._appended = 0
        self._acknowledged = 0
        self._last_flush = clock()
        self._failure: StellaError | None = None
        self._closed = False
        self._writable = True  # neither closed nor failed: checked once per append
        self.sealed_chunks = 0
        self._seal_listeners: list[Callable[[int, float], None]] = []

    # --- opening -----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        evidence_dir: str | Path,
        chain_id: str,
        signer: Signer,
        config: WriterConfig | None = None,
        collector: CollectorInfo | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> ChunkWriter:
        """Open (or start) `evidence_dir/chain_id`, recovering and sealing an interrupted chunk."""
        validate_chain_id(chain_id)
        config = config or WriterConfig()
        if collector is None:
            raise InputError("a CollectorInfo is required to open a chain writer")
        chain_dir = Path(evidence_dir) / chain_id
        try:
            chain_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, chain_dir, "creating the chain directory") from exc
        lock_fd = _lock(chain_dir)
        try:
            head, recovered = recover_chain(
                chain_dir, chain_id, signer, collector, config.zstd_level
            )
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(chain_dir, chain_id, signer, config, collector, lock_fd, head, recovered, clock)

    # --- the hot path --------------------------------------------------------------------------

    def append(self, record: dict[str, Any]) -> None:
        """Validate and add one record; rotates and flushes when due."""
        if not self._writable:
            self._refuse()
        # The C encoder directly (most records, without encode_record's frame); encode_record
        # decides the others. Either validates: observed_at is there.
        line = (compiled_encode and compiled_encode(record)) or encode_record(record)
        self._add_line(line, record["observed_at"], record)

    def append_encoded(self, line: bytes, observed_at: str) -> None:
        """Add one record given as its canonical line: exactly `encode_record(record)` of a
        valid record without first/last_observed_at whose `observed_at` (the toolkit's form)
        is given. For callers that assemble lines from parts already encoded (the Tetragon
        bridge: tests prove its lines equal the encoder's)."""
        if not self._writable:
            self._refuse()
        self._add_line(line, observed_at, None)

    def append_encoded_run(
        self, lines: bytes, observed: str, count: int, earliest: str, latest: str
    ) -> None:
        """`append_encoded` of `count` canonical lines joined by newlines; `observed` their
        observed_at values joined by newlines, `earliest`/`latest` the least and greatest.
        One step when the run fits the open chunk (the chain is the same as line by line: a
        chunk's content is its lines joined, whatever the pieces); else line by line."""
        if not self._writable:
            self._refuse()
        now = self._clock()
        chunk = self._chunk
        size = len(lines) + 1
        if (
            chunk is None
            or chunk.bytes + size > self._max_bytes
            or chunk.records + count > self._records_limit
            or now - chunk.opened_at >= self._max_age
        ):  # a rotation falls inside the run (once per chunk)
            append = self.append_encoded
            for line, at in zip(lines.split(b"\n"), observed.split("\n"), strict=True):
                append(line, at)
            return
        window = chunk.window
        if earliest < window.first:
            window.first = earliest
        if latest > window.last:
            window.last = latest
        chunk.pending.append(lines)
        chunk.bytes += size
        chunk.records += count
        self._appended += count
        if chunk.bytes - chunk.drained_bytes >= _DRAIN_BYTES:
            self._guard(chunk.drain, "writing the open chunk")
        if now - self._last_flush >= self._flush_interval:
            self.flush()

    def _add_line(self, line: bytes, observed: str, record: dict[str, Any] | None) -> None:
        now = self._clock()
        chunk = self._chunk
        size = len(line) + 1
        if (
            chunk is None
            or chunk.bytes + size > self._max_bytes
            or chunk.records >= self._records_limit
            or now - chunk.opened_at >= self._max_age
        ):
            chunk = self._rotate(chunk, size, now)
        window = chunk.window
        if record is None or (
            len(observed) == 27
            and observed[26] == "Z"
            and "first_observed_at" not in record
            and "last_observed_at" not in record
        ):  # the common case, inline: the toolkit's own timestamp form orders as a string
            if observed < window.first:
                window.first = observed
            if observed > window.last:
                window.last = observed
        else:
            window.add(record)
        chunk.pending.append(line)
        chunk.bytes += size
        chunk.records += 1
        self._appended += 1
        if chunk.bytes - chunk.drained_bytes >= _DRAIN_BYTES:
            self._guard(chunk.drain, "writing the open chunk")
        if now - self._last_flush >= self._flush_interval:
            self.flush()

    def _rotate(self, chunk: _OpenChunk | None, size: int, now: float) -> _OpenChunk:
        """The chunk the next record goes to, sealing the current one when a limit is reached."""
        if chunk is None:
            return self._open_chunk(now)
        if chunk.records and chunk.bytes + size > self._max_bytes:
            reason: SealReason = "size"
        elif chunk.records >= self._records_limit:
            # Sealed when the next record arrives (or on tick/close), so a clean stop right
            # after a full chunk marks that chunk final instead of adding an empty one. A
            # record-count limit is a size limit counted in records.
            reason = "size"
        elif now - chunk.opened_at >= self._max_age:
            reason = "age"
        else:
            return chunk  # one record larger than the size limit: it gets a chunk of its own
        self._seal(reason)
        return self._open_chunk(now)

    def add_loss(
        self,
        ring_buffer_dropped: int = 0,
        sampled_out: int = 0,
        filtered_out: int = 0,
        by_reason: Mapping[str, int] | None = None,
    ) -> None:
        """Count events that were not recorded (and why); they land in the next seal."""
        for name, value in (
            ("ring_buffer_dropped", ring_buffer_dropped),
            ("sampled_out", sampled_out),
            ("filtered_out", filtered_out),
            *((f"by_reason.{k}", v) for k, v in (by_reason or {}).items()),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"expected a non-negative integer, got {value!r}", field=name)
        if not (ring_buffer_dropped or sampled_out or filtered_out or by_reason):
            return
        if self._failure is not None or self._closed:
            self._refuse()
        chunk = self._chunk or self._open_chunk(self._clock())
        chunk.loss.ring_buffer_dropped += ring_buffer_dropped
        chunk.loss.sampled_out += sampled_out
        chunk.loss.filtered_out += filtered_out
        for reason, count in (by_reason or {}).items():
            chunk.loss.by_reason[reason] = chunk.loss.by_reason.get(reason, 0) + count
        chunk.loss_dirty = True

    def add_probe_failures(self, failures: Sequence[ProbeFailure]) -> None:
        """Name probes that could not be attached; they land in the next seal, counted in
        `loss.by_reason["gap.probe_attach_failed"]` (their functions were not watched)."""
        if not failures:
            return
        if self._failure is not None or self._closed:
            self._refuse()
        chunk = self._chunk or self._open_chunk(self._clock())
        chunk.probe_failures.extend(failures)
        reasons = chunk.loss.by_reason
        reasons[PROBE_ATTACH_FAILED_REASON] = reasons.get(PROBE_ATTACH_FAILED_REASON, 0) + len(
            failures
        )
        chunk.loss_dirty = True
        # Durable at once: a crash before the next flush must not lose what was not watched.
        self._guard(chunk.sync, "recording probe failures")

    def add_probe_reattachments(self, items: Sequence[ProbeReattachment]) -> None:
        """Name probes the health check reattached; they land in the next seal, their probes
        counted in `loss.by_reason["gap.<reason>"]` (unwatched between the change and the
        reattach)."""
        if not items:
            return
        if self._failure is not None or self._closed:
            self._refuse()
        chunk = self._chunk or self._open_chunk(self._clock())
        chunk.probe_reattachments.extend(items)
        reasons = chunk.loss.by_reason
        for item in items:
            key = f"gap.{item.reason}"
            reasons[key] = reasons.get(key, 0) + item.reattached + item.failed
        chunk.loss_dirty = True
        self._guard(chunk.sync, "recording probe reattachments")

    def flush(self) -> int:
        """Make every appended record durable in the partial; return records acknowledged."""
        if self._failure is not None:
            self._refuse()
        chunk = self._chunk
        if chunk is not None:
            self._guard(chunk.sync, "flushing the open chunk")
        self._acknowledged = self._appended
        self._last_flush = self._clock()
        return self._acknowledged

    def tick(self) -> None:
        """Seal a chunk past its age and flush when the interval has passed (call periodically)."""
        if self._failure is not None or self._closed:
            return
        now = self._clock()
        chunk = self._chunk
        if chunk is not None and now - chunk.opened_at >= self._max_age:
            self._seal("age")
        elif chunk is not None and chunk.records >= self._records_limit:
            self._seal("size")
        elif chunk is not None and now - self._last_flush >= self._flush_interval:
            self.flush()

    def close(self, final: bool = True) -> None:
        """Seal the open chunk; `final=True` marks the clean end of the chain (reason shutdown).

        After an I/O failure nothing more is written: the partial is recovered on the next open.
        """
        if self._closed:
            return
        try:
            if self._failure is None:
                if final:
                    if self._chunk is None:
                        self._open_chunk(self._clock())
                    self._seal("shutdown", final=True)
                elif self._chunk is not None:
                    self._seal("shutdown")
        finally:
            self._closed = True
            self._writable = False
            if self._chunk is not None:
                self._chunk.close_files()
            os.close(self._lock_fd)

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(final=exc_type is None)

    def add_seal_listener(self, listener: Callable[[int, float], None]) -> None:
        """Call `listener(sequence, unix_time)` after each chunk is sealed (metrics, health)."""
        self._seal_listeners.append(listener)

    # --- status ---------------------------------------------------------------------------------

    @property
    def head(self) -> ChainHead:
        return self._head

    @property
    def open_chunk_age(self) -> float | None:
        """Seconds since the open chunk was started; None when everything written is sealed."""
        return None if self._chunk is None else self._clock() - self._chunk.opened_at

    @property
    def acknowledged(self) -> int:
        return self._acknowledged

    @property
    def appended(self) -> int:
        return self._appended

    # --- internals ------------------------------------------------------------------------------

    def _refuse(self) -> None:
        if self._closed:
            raise InputError("the chain writer is closed", path=self.chain_dir)
        assert self._failure is not None
        raise type(self._failure)(
            f"the chain writer stopped after an earlier error: {self._failure.message}",
            path=self._failure.path,
        )

    def _guard(self, action: Callable[[], None], doing: str) -> None:
        try:
            action()
        except OSError as exc:
            self._failure = storage_error(exc, self.chain_dir, doing)
            self._writable = False
            raise self._failure from exc
        except StellaError as exc:
            self._failure = exc
            self._writable = False
            raise

    def _open_chunk(self, now: float) -> _OpenChunk:
        chunk = _OpenChunk(
            self.chain_dir, self._head.sequence + 1, self.config.zstd_level, now, self.collector
        )
        self._chunk = chunk
        self._guard(chunk.create_files, "opening a chunk")
        return chunk

    def _seal(self, reason: SealReason, final: bool = False) -> None:
        chunk = self._chunk
        assert chunk is not None
        self._guard(lambda: self._seal_chunk(chunk, reason, final), "sealing a chunk")
        self._chunk = None
        self._acknowledged = self._appended
        self.sealed_chunks += 1
        sealed_at = time.time()
        for listener in self._seal_listeners:
            listener(self._head.sequence, sealed_at)

    def _seal_chunk(self, chunk: _OpenChunk, reason: SealReason, final: bool) -> None:
        try:
            compressed_sha = chunk.finish_compressed()
            predicate = SealPredicate(
                chain_id=self.chain_id,
                sequence=chunk.sequence,
                previous=self._head.link(),
                content=ChunkContent(chunk.content_sha.hexdigest(), chunk.records, chunk.bytes),
                first_observed_at=chunk.window.first_observed_at,
                last_observed_at=chunk.window.last_observed_at,
                sealed_at=format_timestamp(utc_now()),
                reason=reason,
                final=final,
                collector=chunk.collector,
                loss=chunk.loss,
                probe_failures=tuple(chunk.probe_failures),
                probe_reattachments=tuple(chunk.probe_reattachments),
            )
            seal_bytes = build_seal(predicate, compressed_sha, [self._signer])
        except BaseException:
            chunk.close_files()
            remove_quietly(chunk.chunk_temp)
            raise
        commit_chunk(self.chain_dir, chunk.sequence, chunk.chunk_temp, seal_bytes)
        chunk.close_files()
        remove_quietly(chunk.partial_path, chunk.state_path)
        self._head = ChainHead(chunk.sequence, hashlib.sha256(seal_bytes).hexdigest(), final)


def _lock(chain_dir: Path) -> int:
    path = chain_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise storage_error(exc, path, "creating the writer lock") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise ChainBusyError(
            "another writer holds this evidence chain; one writer per chain at a time",
            path=chain_dir,
        ) from exc
    return fd
