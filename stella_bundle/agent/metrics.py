"""The agent's Prometheus metrics: every name, type and help text in one catalogue.

Names follow the Prometheus conventions (`stella_` prefix, base units, counters end in
`_total`); the alert rules in deploy/prometheus/ use only names from `CATALOGUE`, and a test
holds the two together. Every per-chain series carries `chain` (one chain per function map and
host) and `service` (the function map's service), so rules can divide one by another.

Values are fed from the collector's own counters once per aggregation window (`sync`), never
per event: the hot path pays nothing for metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
)

from ..formats.seal import REATTACH_REASONS

if TYPE_CHECKING:
    from ..collector.session import Collector

MetricType = Literal["counter", "gauge"]
LABELS: Final = ("chain", "service")


@dataclass(frozen=True)
class MetricSpec:
    name: str  # as exposed: counters with their `_total` suffix
    type: MetricType
    help: str
    labels: tuple[str, ...] = LABELS


CATALOGUE: Final[tuple[MetricSpec, ...]] = (
    MetricSpec("stella_observations_total", "counter", "Observation records written to the chain."),
    MetricSpec(
        "stella_observation_rate",
        "gauge",
        "Fraction of the map's required paths observed in the last verification window "
        "(the verifier's rule, evaluated periodically).",
    ),
    MetricSpec(
        "stella_unexpected_symbols",
        "gauge",
        "Symbols observed in the last verification window that the function map does not name.",
    ),
    MetricSpec("stella_probes_attached", "gauge", "Probes attached now."),
    MetricSpec(
        "stella_probe_attach_attempts_total",
        "counter",
        "Probe attachments tried, including functions refused before attaching "
        "(the denominator of the attach failure ratio).",
    ),
    MetricSpec(
        "stella_probe_attach_failures_total",
        "counter",
        "Probes that could not be attached (named in the next seal as gap.probe_attach_failed).",
    ),
    MetricSpec(
        "stella_probe_reattach_total",
        "counter",
        "Probes reattached by the health check, by reason: binary_replaced (a new file or "
        "build at the probed path, re-resolved) or link_lost (a link no longer attached).",
    ),
    MetricSpec(
        "stella_ringbuf_dropped_events_total",
        "counter",
        "Events the kernel dropped because the ring buffer was full.",
    ),
    MetricSpec(
        "stella_observation_buffer_full_total",
        "counter",
        "Observations lost because the in-kernel observation (counter) table was full.",
    ),
    MetricSpec("stella_chunks_sealed_total", "counter", "Evidence chunks sealed and signed."),
    MetricSpec(
        "stella_last_seal_timestamp_seconds",
        "gauge",
        "Unix time of the last seal of the chain (absent until the first seal).",
    ),
    MetricSpec(
        "stella_oldest_unsealed_timestamp_seconds",
        "gauge",
        "Unix time the open chunk was started; absent while everything written is sealed "
        "(an idle chain owes no seal).",
    ),
    MetricSpec(
        "stella_chunk_max_age_seconds",
        "gauge",
        "Configured rotation interval: a chunk is sealed at the latest this long after it opens.",
    ),
    MetricSpec(
        "stella_function_map_refused",
        "gauge",
        "1 while a file of the agent's map directory is refused (not signed by the trust root, "
        "not a map, over the probe limit...; the agent's log says why); absent otherwise.",
        ("function_map",),
    ),
)
CATALOGUE_BY_NAME: Final = {spec.name: spec for spec in CATALOGUE}


def _counter(registry: CollectorRegistry, name: str, labels: tuple[str, ...] = LABELS) -> Counter:
    spec = CATALOGUE_BY_NAME[name]
    # prometheus_client appends `_total` to a counter's exposed samples itself.
    return Counter(name.removesuffix("_total"), spec.help, labels, registry=registry)


def _gauge(registry: CollectorRegistry, name: str) -> Gauge:
    spec = CATALOGUE_BY_NAME[name]
    return Gauge(name, spec.help, spec.labels, registry=registry)


class AgentMetrics:
    """The agent's metric families in one registry (served by endpoint.MetricsServer)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # `*_created` series would double the series count for nothing Prometheus's text format
        # uses; a process-wide switch, and this process has no other metrics.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # process_cpu_seconds_total, process_resident_memory_bytes...: the agent's own cost.
        ProcessCollector(registry=r)
        self.observations = _counter(r, "stella_observations_total")
        self.observation_rate = _gauge(r, "stella_observation_rate")
        self.unexpected_symbols = _gauge(r, "stella_unexpected_symbols")
        self.probes_attached = _gauge(r, "stella_probes_attached")
        self.attach_attempts = _counter(r, "stella_probe_attach_attempts_total")
        self.attach_failures = _counter(r, "stella_probe_attach_failures_total")
        self.reattach = _counter(r, "stella_probe_reattach_total", (*LABELS, "reason"))
        self.ringbuf_dropped = _counter(r, "stella_ringbuf_dropped_events_total")
        self.buffer_full = _counter(r, "stella_observation_buffer_full_total")
        self.chunks_sealed = _counter(r, "stella_chunks_sealed_total")
        self.last_seal = _gauge(r, "stella_last_seal_timestamp_seconds")
        self.oldest_unsealed = _gauge(r, "stella_oldest_unsealed_timestamp_seconds")
        self.chunk_max_age = _gauge(r, "stella_chunk_max_age_seconds")
        # Per file of the map directory (labelled by its name), not per chain.
        self.map_refused = _gauge(r, "stella_function_map_refused")

    def chain(self, chain_id: str, service: str) -> ChainMetrics:
        return ChainMetrics(self, chain_id, service)

    def families(self) -> tuple[Counter | Gauge, ...]:
        """Every per-chain family (each labelled by chain and service; not map_refused)."""
        return (
            self.observations,
            self.observation_rate,
            self.unexpected_symbols,
            self.probes_attached,
            self.attach_attempts,
            self.attach_failures,
            self.ringbuf_dropped,
            self.buffer_full,
            self.chunks_sealed,
            self.last_seal,
            self.oldest_unsealed,
            self.chunk_max_age,
        )


class ChainMetrics:
    """One chain's series; `sync` turns the collector's running totals into counter steps."""

    def __init__(self, metrics: AgentMetrics, chain_id: str, service: str) -> None:
        labels = {"chain": chain_id, "service": service}
        self.observations = metrics.observations.labels(**labels)
        # Created on first verification: a series at 0 before then would page someone.
        self._observation_rate = metrics.observation_rate
        self.unexpected_symbols = metrics.unexpected_symbols.labels(**labels)
        self.probes_attached = metrics.probes_attached.labels(**labels)
        self.attach_attempts = metrics.attach_attempts.labels(**labels)
        self.attach_failures = metrics.attach_failures.labels(**labels)
        # Every reason at 0 from the start: an increase() over a series born at 1 sees nothing.
        self.reattach = {
            reason: metrics.reattach.labels(**labels, reason=reason) for reason in REATTACH_REASONS
        }
        self.ringbuf_dropped = metrics.ringbuf_dropped.labels(**labels)
        self.buffer_full = metrics.buffer_full.labels(**labels)
        self.chunks_sealed = metrics.chunks_sealed.labels(**labels)
        self.chunk_max_age = metrics.chunk_max_age.labels(**labels)
        self._last_seal = metrics.last_seal
        self._oldest_unsealed = metrics.oldest_unsealed
        self._metrics = metrics
        self._labels = labels
        self._seen: dict[str, int] = {}
        self._unsealed_shown = False

    def opened(self, at: float, chunk_max_age_seconds: float, recovered_seals: int) -> None:
        """The chain is open; chunks recovered from a crash were sealed just now."""
        self.chunk_max_age.set(chunk_max_age_seconds)
        if recovered_seals:
            self.chunks_sealed.inc(recovered_seals)
            self._last_seal.labels(**self._labels).set(at)

    def sealed(self, sequence: int, at: float) -> None:
        """ChunkWriter seal listener."""
        self.chunks_sealed.inc()
        self._last_seal.labels(**self._labels).set(at)

    def remove(self) -> None:
        """The chain ended for good (its map left the agent): its series go, so a removed map
        neither pages (its last rate, a seal it no longer owes) nor piles up series."""
        for family in self._metrics.families():
            family.remove(*self._labels.values())
        for reason in self.reattach:
            self._metrics.reattach.remove(*self._labels.values(), reason)

    def coverage(self, observation_rate: float | None, unexpected_symbols: int) -> None:
        """A verification's answer; no rate until a whole lookback window was collected."""
        if observation_rate is not None:
            self._observation_rate.labels(**self._labels).set(observation_rate)
        self.unexpected_symbols.set(unexpected_symbols)

    def sync(self, collector: Collector, open_chunk_age: float | None, now: float) -> None:
        """Bring the series up to the collector's totals (call from the collector's thread)."""
        # Probes on the map's binaries, and those on containers' own copies (while they run).
        inside = sum(len(links) for links in collector.container_links.values())
        self.probes_attached.set(len(collector.links) + inside)
        if open_chunk_age is None:
            if self._unsealed_shown:
                self._oldest_unsealed.remove(*self._labels.values())
                self._unsealed_shown = False
        else:
            self._oldest_unsealed.labels(**self._labels).set(now - open_chunk_age)
            self._unsealed_shown = True
        for name, total, counter in (
            ("observations", collector.records_written, self.observations),
            ("attempts", collector.attach_attempts, self.attach_attempts),
            ("failures", len(collector.probe_failures), self.attach_failures),
            ("ringbuf", collector.drops["ring_buffer_full"], self.ringbuf_dropped),
            ("buffer_full", collector.drops["counter_map_full"], self.buffer_full),
            *(
                (f"reattach.{reason}", collector.reattached[reason], self.reattach[reason])
                for reason in REATTACH_REASONS
            ),
        ):
            step = total - self._seen.get(name, 0)
            if step > 0:
                counter.inc(step)
                self._seen[name] = total
