"""Metrics, health and periodic verification around collection sessions: one `Endpoint`
(listener, registry, health) per agent, one `ChainInstruments` per session.

Everything runs on the collector's own loop (`tick`, once per aggregation window) except the
HTTP listener's thread, which only reads metric values, and the periodic verification, which
works on a snapshot: the hot path is untouched.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from .endpoint import HealthState, MetricsServer
from .metrics import AgentMetrics, ChainMetrics
from .recent import RecentObservations, RecordingSink

if TYPE_CHECKING:
    from ..collector.run import PreparedSession
    from ..collector.session import Collector

DEFAULT_VERIFY_EVERY_SECONDS = 60.0
# A loop turn happens at least every aggregation window; this many missed turns, at least
# STALL_MIN_SECONDS, means the loop is stuck (attach of 2,000 probes takes ~2 s, well below).
STALL_WINDOWS = 10
STALL_MIN_SECONDS = 30.0


class Endpoint:
    """The agent's one listener and registry: `/metrics`, `/healthz`, `/readyz`, shared by
    every chain it collects (one per function map)."""

    def __init__(
        self, listen: str, stall_seconds: float, metrics: AgentMetrics | None = None
    ) -> None:
        self.metrics = metrics or AgentMetrics()
        self.health = HealthState(stall_seconds)
        self._listen = listen
        self._server: MetricsServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.port

    @property
    def url(self) -> str:
        """Where the metrics are served (the port really bound, when 0 asked for any)."""
        host = self._listen.rpartition(":")[0]
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> None:
        self._server = MetricsServer(self._listen, self.metrics.registry, self.health)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


def stall_seconds(session: PreparedSession, least: float = STALL_MIN_SECONDS) -> float:
    """How long a collection loop may go without a turn before it counts as stuck."""
    aggregation = session.collector.config.aggregation_ms / 1000
    return max(least, STALL_WINDOWS * aggregation)


class ChainInstruments:
    """One session's series and periodic verification; call `hook` before attaching."""

    def __init__(
        self,
        session: PreparedSession,
        metrics: AgentMetrics,
        verify_every_seconds: float = DEFAULT_VERIFY_EVERY_SECONDS,
    ) -> None:
        self.session = session
        service = session.function_map.function_map.service
        self.chain: ChainMetrics = metrics.chain(session.chain_id, service)
        self.recent = RecentObservations(session.function_map)
        self.verify_every = verify_every_seconds
        self._collecting_since: float | None = None
        self._next_verify = 0.0
        self._verifier: threading.Thread | None = None

    def hook(self) -> None:
        """Hook the sink and the writer's seals; the collector is not started yet."""
        session = self.session
        writer = session.writer
        session.collector.sink = RecordingSink(session.collector.sink, self.recent)
        writer.add_seal_listener(self.chain.sealed)
        self.chain.opened(time.time(), writer.config.max_age_seconds, len(writer.recovered))

    def collecting(self) -> None:
        """Probes are attached: the verification clock starts."""
        self._collecting_since = time.monotonic()
        self._next_verify = self._collecting_since
        self.tick(self.session.collector)

    def tick(self, collector: Collector) -> None:
        """Once per aggregation window, from the collector's loop."""
        self.chain.sync(collector, self.session.writer.open_chunk_age, time.time())
        now = time.monotonic()
        busy = self._verifier is not None and self._verifier.is_alive()
        if self._collecting_since is not None and now >= self._next_verify and not busy:
            self._next_verify = now + self.verify_every
            # A 2,000-node map takes ~150 ms to verify: on a thread of its own, so the loop
            # keeps draining the ring buffer meanwhile. The snapshot is taken here, on the
            # thread that adds records.
            self._verifier = threading.Thread(
                target=self._verify,
                args=(self.recent.snapshot(), now - self._collecting_since),
                name="stella-verify",
                daemon=True,
            )
            self._verifier.start()

    def _verify(self, records: list[dict[str, Any]], collected_seconds: float) -> None:
        result = self.recent.verify(records=records)
        # Before a whole lookback window has been collected a low rate says nothing about the
        # service, only about the agent's age: the rate appears once it means something.
        rate = None
        if collected_seconds >= self.recent.lookback.total_seconds():
            rate = result.observation_rate
        self.chain.coverage(rate, len(result.unexpected_symbols))

    def close(self) -> None:
        """After the final seal: last values (probes 0, the seal counted)."""
        self._collecting_since = None  # no verification of a stopped collection
        self.tick(self.session.collector)
        if self._verifier is not None:
            self._verifier.join(timeout=10)


class Instrumentation:
    """One session behind its own listener (`signals start`, `agent run` with one map);
    call `start` before attaching."""

    def __init__(
        self,
        session: PreparedSession,
        listen: str,
        verify_every_seconds: float = DEFAULT_VERIFY_EVERY_SECONDS,
        metrics: AgentMetrics | None = None,
        least_stall_seconds: float = STALL_MIN_SECONDS,
    ) -> None:
        self.session = session
        self.endpoint = Endpoint(listen, stall_seconds(session, least_stall_seconds), metrics)
        self.metrics = self.endpoint.metrics
        self.health = self.endpoint.health
        self.instruments = ChainInstruments(session, self.metrics, verify_every_seconds)

    @property
    def port(self) -> int:
        return self.endpoint.port

    @property
    def url(self) -> str:
        return self.endpoint.url

    def start(self) -> None:
        """Listen, hook the sink and the writer's seals; the collector is not started yet."""
        self.endpoint.start()
        self.instruments.hook()

    def collecting(self) -> None:
        """Probes are attached: ready, and the verification clock starts."""
        self.instruments.collecting()
        self.health.ready()

    def tick(self, collector: Collector) -> None:
        """Once per aggregation window, from the collector's loop."""
        self.health.heartbeat()
        self.instruments.tick(collector)

    def stopping(self) -> None:
        self.health.not_ready("stopping: final seal")

    def close(self) -> None:
        """After the final seal: last values (probes 0, the seal counted), then stop listening."""
        self.instruments.close()
        self.endpoint.close()
