"""The runtime-trace service: what `stella tetragon`/`stella observations timeline` and the
runtime endpoints answer (hot symbols, timeline, Tetragon lines posted for ingest), over the
evidence chains of one directory. With the bridge disabled, the null service answers empty
results and records nothing, never an error.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer

from ..coverage.inputs import evidence_chain_dirs
from ..errors import InputError
from ..evidence.config import WriterConfig
from .analysis import HotSymbols, Timeline, hot_symbols, timeline
from .config import TetragonConfig
from .events import EventMapper
from .ingest import TetragonIngest, TetragonIngestResult
from .nodes import NodeIndex
from .privacy import PrivacyFilter
from .sources import read_blocks


class RuntimeTraceService:
    """Hot symbols, timeline and ingest over `evidence_dir` (one chain per node by default)."""

    enabled = True

    def __init__(
        self,
        evidence_dir: Path,
        config: TetragonConfig | None = None,
        nodes: NodeIndex | None = None,
        writer_config: WriterConfig | None = None,
    ) -> None:
        self.evidence_dir = evidence_dir
        self.config = config or TetragonConfig()
        self.nodes = nodes or NodeIndex()
        self.writer_config = writer_config

    def _records(self) -> Iterator[dict[str, Any]]:
        from ..evidence.reader import iter_chain_records

        try:
            chains = evidence_chain_dirs(self.evidence_dir)
        except InputError:  # no directory or no chain yet: nothing observed, not an error
            return
        for chain in chains:
            yield from iter_chain_records(chain)

    def hot_symbols(
        self, *, window_seconds: int | None = None, top: int | None = None
    ) -> HotSymbols:
        return hot_symbols(self._records(), window_seconds=window_seconds, top=top)

    def timeline(
        self,
        *,
        window_from: str | None = None,
        window_to: str | None = None,
        image: str | None = None,
        purl: str | None = None,
        limit: int | None = None,
    ) -> Timeline:
        return timeline(
            self._records(),
            window_from=window_from,
            window_to=window_to,
            image=image,
            purl=purl,
            limit=limit,
        )

    def ingest_lines(
        self, data: bytes, signer: Signer, *, chain_id: str = "", source_name: str = "<request>"
    ) -> TetragonIngestResult:
        """Tetragon JSON lines (a request body) sealed into a chain, queryable at once."""
        runner = TetragonIngest(
            self.evidence_dir,
            chain_id,
            signer,
            EventMapper(self.nodes, PrivacyFilter(self.config.privacy)),
            config=self.writer_config,
            source_name=source_name,
            max_object_bytes=self.config.max_line_bytes,
        )
        try:
            runner.feed_blocks(
                read_blocks(io.BytesIO(data), source_name, self.config.max_line_bytes)
            )
        except BaseException:
            runner.abort()
            raise
        return runner.close()


class NullRuntimeTraceService(RuntimeTraceService):
    """The bridge switched off (`tetragon.enabled: false`): empty answers, nothing written."""

    enabled = False

    def _records(self) -> Iterator[dict[str, Any]]:
        return iter(())

    def ingest_lines(
        self, data: bytes, signer: Signer, *, chain_id: str = "", source_name: str = "<request>"
    ) -> TetragonIngestResult:
        return TetragonIngestResult(chain_id, self.evidence_dir / chain_id)


def runtime_trace_service(
    evidence_dir: Path,
    config: TetragonConfig | None = None,
    nodes: NodeIndex | None = None,
    writer_config: WriterConfig | None = None,
) -> RuntimeTraceService:
    """The service `config` asks for: the null one when the bridge is disabled."""
    config = config or TetragonConfig()
    kind = RuntimeTraceService if config.enabled else NullRuntimeTraceService
    return kind(evidence_dir, config, nodes, writer_config)
