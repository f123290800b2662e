"""The collection loop: attach the plan, read the ring buffer and counters, apply the mode,
write observation records to a sink (the evidence-chain writer), account for every loss.

Modes (DESIGN.md §6): `coverage` records the first hit of a node per window and detaches its
uprobe until the next window; `count` reads in-kernel counters every aggregation window and
writes aggregated records; `trace` records every hit the kernel sampled in.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import errno
import fnmatch
import os
import socket
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import CollectorEnvironmentError, ConfigError, StellaError
from ..formats.record import validate_record
from ..formats.scope import RECORD_CONTEXT_KEY, Scope
from ..formats.seal import REATTACH_REASONS, ProbeFailure, ProbeReattachment
from ..functionmap.elf import index_binary
from ..timeutil import format_timestamp
from .containers import CgroupResolver, parse_cgroup_path
from .elfsym import resolve_symbol
from .events import (
    CGROUP_COOKIE,
    KIND_CGROUP,
    KIND_EXEC,
    KIND_FILE,
    KIND_NAMES,
    KIND_NET,
    KIND_TLS,
    MODE_COUNT,
    MODE_COVERAGE,
    MODE_TRACE,
    MODES,
    STAT_COUNTER_FULL,
    STAT_FILTERED_OUT,
    STAT_RINGBUF_DROPPED,
    STAT_SAMPLED_OUT,
    TCP_STATES,
    AuditTail,
    StellaConfig,
    StellaEvent,
    UsdtArgC,
    UsdtSpecC,
    decode_text,
    format_address,
)
from .health import (
    DEFAULT_HEALTH_CHECK_SECONDS,
    BinaryIdentity,
    HealthEvent,
    HealthReason,
    LinkKey,
    ProbeHealth,
    identify,
    nothing_probeable,
)
from .loader import Link, ProbeAttachError, ProbeRuntime
from .plan import AttachPlan, AttachSpec, Unobservable, reresolve
from .usdt import PyObjectSnapshot, audit_details, str_data_offset
from .workload import (
    ResolvedScope,
    container_cgroups,
    container_root,
    executable_key_in,
    resolve_scope,
)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MAX_BATCH = 8192  # events decoded per loop turn at most
# A container the runtime cannot name yet is looked at again every 100 ms for 3 s (each look
# walks the cgroup tree: not at the 5 ms pace of following a start).
_NAME_RETRY_NS = 3_000_000_000
_NAME_RETRY_EVERY_NS = 100_000_000
# For this long after a cgroup appeared, while a container in scope is not settled yet, the
# loop looks every few milliseconds instead of every 100 ms: the container's first
# process pivots into its root ~10-50 ms after the cgroup exists and runs its entrypoint
# right after (bench/container_start.py). Bounded: a container that never settles (its
# executable absent) costs fast turns for 2 s only.
_FOLLOW_NS = 2_000_000_000
_FOLLOW_POLL_MS = 5
_LATENCIES_KEPT = 1024
# Container lifecycle (probes/cgroup.bpf.c): the BTF-typed tracepoint first, then the raw one.
_LIFECYCLE_OBJECT = "cgroup.bpf.o"
_LIFECYCLE_PROGRAMS = {
    "tp_btf": {
        "stella_btf_cgroup_mkdir": "cgroup_mkdir",
        "stella_btf_cgroup_rmdir": "cgroup_rmdir",
    },
    "raw_tracepoint": {
        "stella_raw_cgroup_mkdir": "cgroup_mkdir",
        "stella_raw_cgroup_rmdir": "cgroup_rmdir",
    },
}


class EvidenceSink(Protocol):
    """What the collector writes to (stella_bundle.evidence.writer.ChunkWriter satisfies it)."""

    def append(self, record: dict[str, Any]) -> Any: ...
    def add_loss(
        self, *, ring_buffer_dropped: int = 0, sampled_out: int = 0, filtered_out: int = 0
    ) -> Any: ...
    def add_probe_failures(self, failures: Sequence[ProbeFailure]) -> Any: ...
    def add_probe_reattachments(self, items: Sequence[ProbeReattachment]) -> Any: ...
    def tick(self) -> Any: ...
    def close(self, final: bool = True) -> Any: ...


@dataclass
class MemorySink:
    """A sink that keeps records and loss in memory (library users, tests without a chain)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    loss: dict[str, int] = field(
        default_factory=lambda: {"ring_buffer_dropped": 0, "sampled_out": 0, "filtered_out": 0}
    )
    probe_failures: list[ProbeFailure] = field(default_factory=list)
    probe_reattachments: list[ProbeReattachment] = field(default_factory=list)
    closed: bool = False

    def append(self, record: dict[str, Any]) -> None:
        # ChunkWriter validates in its encoder; this sink validates here, the collector never
        # validates twice on the hot path.
        self.records.append(validate_record(record))

    def add_loss(
        self, *, ring_buffer_dropped: int = 0, sampled_out: int = 0, filtered_out: int = 0
    ) -> None:
        self.loss["ring_buffer_dropped"] += ring_buffer_dropped
        self.loss["sampled_out"] += sampled_out
        self.loss["filtered_out"] += filtered_out

    def add_probe_failures(self, failures: Sequence[ProbeFailure]) -> None:
        self.probe_failures.extend(failures)

    def add_probe_reattachments(self, items: Sequence[ProbeReattachment]) -> None:
        self.probe_reattachments.extend(items)

    def tick(self) -> None:
        return None

    def close(self, final: bool = True) -> None:
        self.closed = final


@dataclass
class CollectorConfig:
    mode: str = "coverage"
    window_seconds: float = 1800.0
    aggregation_ms: int = 1000
    sampling_rate: float = 1.0
    pids: tuple[int, ...] = ()
    containers: tuple[str, ...] = ()
    path_allow: tuple[str, ...] = ()
    path_deny: tuple[str, ...] = ()
    host: str = field(default_factory=socket.gethostname)
    # Time allowed for attaching the whole plan; probes not reached by then are named in the
    # seal as not attached (None: no limit).
    attach_timeout_ms: int | None = None
    # The function map's workload, filtered in the kernel (None: every process on the host).
    scope: Scope | None = None
    # How often probed binaries and links are checked (health.py; None: never).
    health_check_seconds: float | None = DEFAULT_HEALTH_CHECK_SECONDS

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"expected one of {', '.join(MODES)}", field="mode")
        if not 0.0 < self.sampling_rate <= 1.0:
            raise ConfigError("expected a number in (0, 1]", field="sampling_rate")
        if self.window_seconds <= 0:
            raise ConfigError("expected a positive number of seconds", field="window")
        if self.aggregation_ms < 10:
            raise ConfigError("expected at least 10 ms", field="aggregation_window")
        if self.health_check_seconds is not None and not self.health_check_seconds > 0:
            raise ConfigError("expected a positive number of seconds", field="health_check")
        if self.attach_timeout_ms is not None and self.attach_timeout_ms <= 0:
            raise ConfigError(
                "expected a positive number of milliseconds", field="attach_timeout_ms"
            )

    @property
    def mode_id(self) -> int:
        return MODES[self.mode]

    def path_allowed(self, path: str) -> bool:
        if self.path_allow and not any(fnmatch.fnmatchcase(path, g) for g in self.path_allow):
            return False
        return not any(fnmatch.fnmatchcase(path, g) for g in self.path_deny)


@dataclass
class _Aggregate:
    count: int
    first_ns: int
    last_ns: int
    event: StellaEvent
    raw: bytes = b""


class Collector:
    """One collection session over a runtime, a plan and a sink."""

    def __init__(
        self,
        plan: AttachPlan,
        runtime: ProbeRuntime,
        sink: EvidenceSink,
        config: CollectorConfig,
        resolver: CgroupResolver | None = None,
    ) -> None:
        self.plan = plan
        self.runtime = runtime
        self.sink = sink
        self.config = config
        self.resolver = resolver or CgroupResolver()
        self.specs = {spec.index: spec for spec in plan.specs}
        self.links: dict[int, Link] = {}
        self.detached: set[int] = set()
        self._pending: list[bytes] = []
        self._seen: set[tuple[Any, ...]] = set()
        self._aggregates: dict[tuple[Any, ...], _Aggregate] = {}
        self._count_base: dict[tuple[int, int, int], int] = {}
        self._stats_base = [0] * 8
        self._user_filtered = 0
        self._window_start_ns = 0
        self._clock_offset_ns = 0
        self.records_written = 0
        self._ts_second = -1
        self._ts_prefix = ""
        self.loss_totals = {"ring_buffer_dropped": 0, "sampled_out": 0, "filtered_out": 0}
        self.observed: dict[int, int] = {}
        self.probe_failures: list[ProbeFailure] = []
        # Attach attempts (plan-time refusals included) and the kernel's two drop causes apart:
        # the seal counts both drops as ring_buffer_dropped, operators alert on each (metrics).
        self.attach_attempts = 0
        self.drops = {"ring_buffer_full": 0, "counter_map_full": 0}
        self.started = False
        self.scope: ResolvedScope | None = None
        # Cgroup ids currently in the kernel's scope map (containers come and go), the links
        # of the cgroup_mkdir/rmdir programs that say when to look again, and whether to.
        self.scope_cgroups: set[int] = set()
        self.lifecycle_links: list[Link] = []
        # Per container in scope: the scope's executable inside it (inode, dev_t), and links
        # of probes on its own copies of the map's binaries; containers not settled yet (no
        # process in their own root yet).
        self.container_executables: dict[int, tuple[int, int]] = {}
        self.container_links: dict[int, dict[int, Link]] = {}  # cgroup -> spec index -> link
        # The container's own copies those links are on, per binary path (as seen inside):
        # what the health check compares with, and the build id its records name.
        self.container_binaries: dict[int, dict[str, BinaryIdentity]] = {}
        self._unsettled: set[int] = set()
        # Containers looked at through their root filesystem as mounted on the host (before a
        # process of theirs runs in it): spec index -> (inode, device) of the file attached.
        self._early: dict[int, dict[int, tuple[int, int]]] = {}
        # Container start latency (bench/container_start.py): the kernel's cgroup_mkdir time
        # per new cgroup id, the times a container came in scope and settled (probes inside
        # attached), and per container the ns from its mkdir to each (the last ones kept).
        self._mkdir_ns: dict[int, int] = {}
        self._stage_ns: dict[int, dict[str, int]] = {}
        # Containers the runtime could not name yet (asked while being created): since when,
        # looked at again on the next loop turns for a bounded time.
        self._name_pending: dict[int, int] = {}
        self._name_retry_at_ns = 0
        self.container_latency_ns: dict[int, dict[str, int]] = {}
        self.lifecycle_type: str | None = None
        self._cgroups_changed = False
        # Binaries replaced on disk and links lost (health.py): what was found, probes
        # reattached per reason (metrics), when to look next.
        self.health = ProbeHealth()
        self.health_events: list[HealthEvent] = []
        self.reattached = dict.fromkeys(REATTACH_REASONS, 0)
        self._next_health = 0.0
        self._follow_until_ns = 0

    # Set-up -----------------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        # Resolved first: a workload not found on this host is refused before any probe loads.
        self.scope = None if cfg.scope is None else resolve_scope(cfg.scope, self.resolver)
        cgroup_ids: set[int] = set()
        for container in cfg.containers:
            ids = self.resolver.ids_under(container)
            if not ids:
                raise ConfigError(
                    f"no cgroup on this host belongs to container {container!r}", field="container"
                )
            cgroup_ids |= ids
        filtering = bool(cfg.pids or cgroup_ids)
        kernel_config = StellaConfig(
            mode=cfg.mode_id,
            sample_ppm=round(cfg.sampling_rate * 1_000_000),
            filter_enabled=int(filtering),
            scope=self.scope.kernel_flags if self.scope is not None else 0,
        )
        # uprobe_multi links in every mode where the kernel has them: a hit costs what a
        # perf-event uprobe's does (measured), but closing perf-event uprobes is serialised in
        # the kernel (~100 ms each, even from many threads) while multi links close in parallel.
        wanted = self.plan.programs_by_object()
        lifecycle = self._lifecycle_type()
        if lifecycle is not None:
            wanted.setdefault(_LIFECYCLE_OBJECT, set()).update(_LIFECYCLE_PROGRAMS[lifecycle])
        self.runtime.load(wanted, kernel_config)
        if filtering:
            self.runtime.set_filters(set(cfg.pids), cgroup_ids)
        if self.scope is not None:
            self.scope_cgroups = set(self.scope.cgroup_ids)
            self.runtime.set_scope(self.scope_cgroups, set(self.scope.executables))
            if self.scope.scope.container_selected:
                self._unsettled = set(self.scope_cgroups)
        failures = [_unobservable_failure(item) for item in self.plan.unobservable]
        self.attach_attempts += len(failures)
        timeout = cfg.attach_timeout_ms
        try:
            unresolved = self._resolve_replaced_again()
            # The attach timeout counts from here: reading the binaries' build ids is not
            # attaching (a 1 ms timeout ran out before the first attach).
            deadline = None if timeout is None else time.monotonic() + timeout / 1000
            if self._unsettled:
                self._settle_containers()
            if lifecycle is not None:
                # tp_btf programs know their target; raw ones are attached by name.
                self.lifecycle_links = [
                    self.runtime.attach_raw_tracepoint(
                        _LIFECYCLE_OBJECT,
                        program,
                        None if lifecycle == "tp_btf" else tracepoint,
                        CGROUP_COOKIE,
                    )
                    for program, tracepoint in _LIFECYCLE_PROGRAMS[lifecycle].items()
                ]
                self.lifecycle_type = lifecycle
            riders = self._configure_usdt()
            for spec in self.plan.specs:
                if spec.index in riders:
                    continue  # observed through another node's python:audit link
                if spec.index in unresolved:
                    failures.append(unresolved[spec.index])
                    continue
                if deadline is not None and time.monotonic() > deadline:
                    failures.append(_timed_out(spec, timeout or 0))
                    continue
                try:
                    self.links[spec.index] = self._attach(spec)
                except ProbeAttachError as exc:
                    # One unprobeable function must not stop the others: named in the seal.
                    failures.append(_attach_failure(spec, exc))
            if self.plan.specs and not self.links:
                raise CollectorEnvironmentError(
                    f"no probe of the function map could be attached: {failures[-1].error}"
                )
            self.sink.add_probe_failures(failures)
        except Exception:
            self._detach_all()
            self.runtime.close()
            raise
        self.probe_failures = failures
        self._next_health = time.monotonic()  # the first look takes the links as attached
        self.runtime.open_ring(self._on_sample)
        self._clock_offset_ns = time.time_ns() - time.monotonic_ns()
        self._window_start_ns = time.monotonic_ns()
        self.started = True

    def _lifecycle_type(self) -> str | None:
        """How container starts and stops are learnt from the kernel (None: no container
        scope, or no tracepoint type here; the periodic look at the cgroup tree remains)."""
        if self.scope is None or not self.scope.scope.container_selected:
            return None
        return next((t for t in _LIFECYCLE_PROGRAMS if self.runtime.features.has(t)), None)

    def _configure_usdt(self) -> set[int]:
        """Write USDT argument specs and audit event names to the kernel. Audit nodes on one
        binary share one link on its python:audit probe (the first node's; its index is the
        cookie): returns the indices of the nodes riding another's link."""
        leaders: dict[tuple[str, int], AttachSpec] = {}
        riders: set[int] = set()
        for spec in self.plan.specs:
            if spec.audit_event is None:
                continue
            leader = leaders.setdefault((spec.target, spec.offset), spec)
            if leader is spec:
                self.runtime.set_usdt_spec(spec.object_name, spec.index, usdt_spec_c(spec))
            else:
                riders.add(spec.index)
            self.runtime.set_audit_event(spec.object_name, spec.audit_event, spec.index, spec.kind)
        return riders

    def _attach(self, spec: AttachSpec) -> Link:
        self.attach_attempts += 1
        obj, program, target, cookie = spec.object_name, spec.program, spec.target, spec.index
        if spec.attach_type in ("uprobe", "uretprobe"):
            return self.runtime.attach_uprobe(
                obj, program, target, spec.offset, cookie, retprobe=spec.attach_type == "uretprobe"
            )
        if spec.attach_type == "usdt":
            return self.runtime.attach_uprobe(
                obj, program, target, spec.offset, cookie, ref_ctr_offset=spec.ref_ctr_offset
            )
        if spec.attach_type == "tracepoint":
            return self.runtime.attach_tracepoint(obj, program, target, cookie)
        if spec.attach_type in ("raw_tracepoint", "tp_btf"):
            name = target if spec.attach_type == "raw_tracepoint" else None
            return self.runtime.attach_raw_tracepoint(obj, program, name, cookie)
        if spec.attach_type in ("fentry", "fexit"):
            return self.runtime.attach_tracing(obj, program, spec.attach_type, cookie)
        return self.runtime.attach_kprobe(obj, program, target, cookie)

    def _detach_all(self) -> None:
        inside = [link for links in self.container_links.values() for link in links.values()]
        self.runtime.detach_many([*self.links.values(), *self.lifecycle_links, *inside])
        self.links.clear()
        self.lifecycle_links.clear()
        self.container_links.clear()
        self.container_binaries.clear()

    # Loop -------------------------------------------------------------------------------------
    def _on_sample(self, data: int, size: int) -> int:
        self._pending.append(ctypes.string_at(data, size))
        # Hand control back to the loop now and then (stop requests, aggregation, seals).
        return -errno.EAGAIN if len(self._pending) >= _MAX_BATCH else 0

    def run(
        self,
        duration: float | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        on_tick: Callable[[Collector], None] | None = None,
    ) -> None:
        """Collect until `duration` seconds passed or `should_stop()` says so."""
        aggregation_ns = self.config.aggregation_ms * 1_000_000
        window_ns = int(self.config.window_seconds * 1e9)
        deadline = None if duration is None else time.monotonic_ns() + int(duration * 1e9)
        next_aggregation = time.monotonic_ns() + aggregation_ns
        while not should_stop():
            now = time.monotonic_ns()
            if deadline is not None and now >= deadline:
                break
            following = now < self._follow_until_ns and bool(self._unsettled)
            longest = _FOLLOW_POLL_MS if following else 100
            self.runtime.poll(min(longest, max(1, (next_aggregation - now) // 1_000_000)))
            self.process_pending()
            retry_at = self._name_retry_at_ns
            if self._cgroups_changed or (retry_at and time.monotonic_ns() >= retry_at):
                self.watch_containers()
            elif self._unsettled:
                self._settle_containers()
            now = time.monotonic_ns()
            if now >= next_aggregation:
                self.aggregate()
                next_aggregation = now + aggregation_ns
                if on_tick is not None:
                    on_tick(self)
            if now - self._window_start_ns >= window_ns:
                self.roll_window()

    def process_pending(self) -> None:
        pending, self._pending = self._pending, []
        size = ctypes.sizeof(StellaEvent)
        events = [StellaEvent.from_buffer_copy(raw[:size].ljust(size, b"\0")) for raw in pending]
        if self.lifecycle_links and any(e.kind == KIND_CGROUP for e in events):
            # A cgroup came or went: look at the tree now (the event itself is no record).
            self._cgroups_changed = True
            for event in events:
                if event.kind == KIND_CGROUP and not event.aux:
                    self._mkdir_ns[int(event.cgroup_id)] = int(event.ts_ns)
                    self._note_latency(int(event.cgroup_id))
                    self._follow_until_ns = time.monotonic_ns() + _FOLLOW_NS
            kept = [(e, r) for e, r in zip(events, pending, strict=True) if e.kind != KIND_CGROUP]
            events, pending = [e for e, _ in kept], [r for _, r in kept]
        if self.config.mode_id == MODE_COVERAGE:
            self._detach_first_hits(events)
        for event, raw in zip(events, pending, strict=True):
            self._handle(event, raw)

    def _detach_first_hits(self, events: list[StellaEvent]) -> None:
        """Coverage mode: stop paying for a node's uprobe as soon as its first hit is seen.

        Done before any record is built. One node: closed right here (a new thread would wait
        for a CPU on a busy host while every call still traps). Several at once: closed in
        parallel threads, since each close also waits ~20 ms for RCU.
        """
        indices: list[int] = []
        for event in events:
            spec = self.specs.get(int(event.cookie))
            if (
                spec is not None
                and spec.in_kernel_mode
                and spec.user_space
                and spec.index in self.links
                and spec.index not in indices
            ):
                indices.append(spec.index)
        for index in indices:
            self.runtime.detach(self.links.pop(index), wait=len(indices) == 1)
            self.detached.add(index)

    def watch_containers(self) -> None:
        """A container scope follows its containers: the cgroups of matching containers started
        since the last look enter the kernel's scope map, those of stopped ones leave it.
        (cgroupfs is walked every aggregation window; the cgroup id names a container's
        cgroup only while it exists.)"""
        self._cgroups_changed = False
        if self.scope is None or not self.scope.scope.container_selected:
            return
        unnamed: set[int] = set()
        current = container_cgroups(
            self.scope.scope, self.resolver, self.resolver.all_paths(), unnamed
        )
        now = time.monotonic_ns()
        self._name_pending = {c: self._name_pending.get(c, now) for c in unnamed}
        pending = any(now - since <= _NAME_RETRY_NS for since in self._name_pending.values())
        self._name_retry_at_ns = now + _NAME_RETRY_EVERY_NS if pending else 0
        started, stopped = current - self.scope_cgroups, self.scope_cgroups - current
        if started:
            self.runtime.set_scope(started, set())
            for cgroup_id in started:
                self._note_latency(cgroup_id, "in_scope")
        if stopped:
            gone = {
                self.container_executables.pop(c)
                for c in stopped
                if c in self.container_executables
            }
            self.runtime.unset_scope(stopped, gone - set(self.container_executables.values()))
            self.runtime.detach_many(
                [link for c in stopped for link in self.container_links.pop(c, {}).values()]
            )
            for cgroup_id in stopped:
                self._stage_ns.pop(cgroup_id, None)
                self._early.pop(cgroup_id, None)
                self.container_binaries.pop(cgroup_id, None)
        self.scope_cgroups = current
        # Cgroups neither in scope nor awaiting a name by now are no container of the scope.
        self._mkdir_ns = {
            c: t for c, t in self._mkdir_ns.items() if c in self._name_pending or c in current
        }
        self._unsettled = (self._unsettled | started) & current
        self._settle_containers()

    def _settle_containers(self) -> None:
        """Per container in scope, once a process of it runs in its own root: the scope's
        executable inside it, and probes on its own copies of the map's binaries. Before that,
        when the runtime names the container's root filesystem mounted on the host and the
        scope names no executable, the probes are attached there at once (`_attach_early`)."""
        assert self.scope is not None
        executable = self.scope.scope.executable
        for cgroup_id in sorted(self._unsettled):
            path = self.resolver.path_of(cgroup_id)
            if path is None:
                continue
            if executable is None and cgroup_id not in self._early:
                self._attach_early(cgroup_id, path)
            root = container_root(self.resolver, path)
            if root is None:
                continue
            if executable is not None:
                key = executable_key_in(root, executable)
                if key is None:
                    continue  # not there yet (the entrypoint may still be starting)
                self.container_executables[cgroup_id] = key
                self.runtime.set_scope(set(), {key})
            links = self.container_links.get(cgroup_id, {})
            fresh = self._attach_inside(root, self._early.pop(cgroup_id, None), links)
            links.update(fresh)
            # Published once attached: a reader of the agent's state (metrics, /readyz, tests)
            # never sees the container with its links still being made.
            self.container_links[cgroup_id] = links
            self._watch_inside(cgroup_id, root, fresh)
            self._unsettled.discard(cgroup_id)
            self._note_latency(cgroup_id, "settled")

    def _attach_early(self, cgroup_id: int, path: str) -> None:
        """Probes on the container's own binaries through its root filesystem as mounted on the
        host (podman mounts it before the cgroup exists): attached ~30-50 ms before its first
        process has pivoted into it. The same files (same inode and device) as seen from
        inside; a path another mount covers in the container is checked again once a process
        runs there (`_attach_inside` with what was attached here). Failures are not reported
        from here: that later look reports them, on the file the container really has."""
        self._early[cgroup_id] = {}
        info = parse_cgroup_path(path)
        rootfs = self.resolver.runtime.rootfs(info.runtime, info.container_id) if info else None
        if rootfs is None:
            return
        attached: dict[int, tuple[int, int]] = {}
        links = self._attach_inside(rootfs, None, {}, attached)
        if links:
            self.container_links[cgroup_id] = links
            self._watch_inside(cgroup_id, rootfs, links)
            self._early[cgroup_id] = attached
            self._note_latency(cgroup_id, "settled")

    def _note_latency(self, cgroup_id: int, stage: str | None = None) -> None:
        """A container's start latency: `stage` reached now (the first time). Its cgroup_mkdir
        event may be read after a look triggered by another cgroup's event (runc makes several)
        already put it in scope: the ns are counted once both are known."""
        if stage is not None:
            self._stage_ns.setdefault(cgroup_id, {}).setdefault(stage, time.monotonic_ns())
        created = self._mkdir_ns.get(cgroup_id)
        stages = self._stage_ns.get(cgroup_id)
        if created is None or not stages:
            return
        self.container_latency_ns[cgroup_id] = {
            "created": created,
            **{name: at - created for name, at in stages.items()},
        }
        while len(self.container_latency_ns) > _LATENCIES_KEPT:
            del self.container_latency_ns[next(iter(self.container_latency_ns))]

    def _attach_inside(
        self,
        root: str,
        early: dict[int, tuple[int, int]] | None = None,
        current: dict[int, Link] | None = None,
        attached: dict[int, tuple[int, int]] | None = None,
    ) -> dict[int, Link]:
        """Uprobes on the container's own copies of the map's binaries (the same path under
        the container's root, another inode: the host file's probes do not fire there). A
        bind-mounted host file is the same inode, already probed. Failures go to the seal,
        except when `attached` is given (the early look: the file identities attached are put
        there, failures left to the look through a process's root). `early`: the identities
        attached by the early look, whose links (in `current`) stay when the file is the same
        and are closed when a mount in the container covers it with another."""
        links: dict[int, Link] = {}
        failures: list[ProbeFailure] = []
        early = early or {}
        for spec in self.plan.specs:
            if spec.attach_type not in ("uprobe", "uretprobe"):
                continue
            inside = root + spec.target
            try:
                on_host, in_container = os.stat(spec.target), os.stat(inside)
            except OSError:
                continue
            if not stat.S_ISREG(in_container.st_mode):
                # A FIFO there (the container's own doing) would block this loop reading it.
                failures.append(
                    ProbeFailure(
                        spec.node_hash,
                        spec.symbol,
                        spec.purl,
                        inside,
                        errno.EINVAL,
                        f"not a regular file in the container ({stat.filemode(in_container.st_mode)})",
                    )
                )
                continue
            identity = (in_container.st_ino, in_container.st_dev)
            if early.get(spec.index) == identity:
                continue  # attached early to this very file
            if current is not None and spec.index in early:
                stale = current.pop(spec.index, None)
                if stale is not None:
                    self.runtime.detach_many([stale])
            if (on_host.st_ino, on_host.st_dev) == identity:
                continue
            try:
                links[spec.index] = self._attach_one_inside(root, spec)
                if attached is not None:
                    attached[spec.index] = identity
            except ProbeAttachError as exc:
                failures.append(_attach_failure(spec, exc))
            except StellaError as exc:
                failures.append(
                    ProbeFailure(
                        spec.node_hash, spec.symbol, spec.purl, inside, errno.ENOENT, exc.message
                    )
                )
        if failures and attached is None:
            self.probe_failures.extend(failures)
            self.sink.add_probe_failures(failures)
        return links

    def _watch_inside(self, cgroup_id: int, root: str, links: dict[int, Link]) -> None:
        """The container's files under `links` as just attached (the ELF index already read
        them: no second read of the build id on the container start path)."""
        watched = self.container_binaries.setdefault(cgroup_id, {})
        for index in links:
            target = self.specs[index].target
            inside = root + target
            try:
                st = os.stat(inside)
                build_id = index_binary(inside).build_id
            except (OSError, StellaError):
                continue  # gone meanwhile: the next look through its root says what is there
            watched[target] = BinaryIdentity(
                st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, build_id
            )

    def _attach_one_inside(self, root: str, spec: AttachSpec) -> Link:
        inside = root + spec.target
        offset = resolve_symbol(inside, spec.symbol, follow_links=False).offset
        return self.runtime.attach_uprobe(
            spec.object_name,
            spec.program,
            inside,
            offset,
            spec.index,
            retprobe=spec.attach_type == "uretprobe",
        )

    def aggregate(self) -> None:
        """Count mode flush, loss accounting, health, writer tick (every aggregation window)."""
        self.watch_containers()
        interval = self.config.health_check_seconds
        if interval is not None and time.monotonic() >= self._next_health:
            self._next_health = time.monotonic() + interval
            self.check_health()
        if self.config.mode_id == MODE_COUNT:
            self._flush_kernel_counts()
        self._flush_aggregates()
        self._account_loss()
        self.sink.tick()

    # Health -----------------------------------------------------------------------------------
    def check_health(self) -> list[HealthEvent]:
        """Look at every probed binary and link once; reattach what needs it (health.py)."""
        events = self._check_binaries() + self._check_container_binaries() + self._check_links()
        self.health_events.extend(events)
        return events

    def _check_binaries(self) -> list[HealthEvent]:
        events: list[HealthEvent] = []
        for path, before, now in self.health.changed_binaries():
            if now is None:
                was = before.describe() if before is not None else "unknown"
                events.append(
                    HealthEvent(
                        "binary_missing",
                        path,
                        f"{nothing_probeable(path)} (was {was}); its probes stay on the running "
                        "copy until a file appears at this path again",
                    )
                )
                continue
            was = before.describe() if before is not None else "missing"
            indices = [
                spec.index
                for spec in self.plan.specs
                if spec.user_space
                and spec.target == path
                and (spec.index in self.links or spec.index in self.detached)
            ]
            events.append(
                self._reattach(
                    indices,
                    "binary_replaced",
                    path,
                    f"replaced ({was} -> {now.describe()})",
                    (before.build_id if before is not None else None, now.build_id),
                )
            )
        return events

    def _check_container_binaries(self) -> list[HealthEvent]:
        """The container's own copies probed through its root, looked at through a process's
        root now (a container with no process left has exited: nothing to do, its cgroup's
        removal detaches its links)."""
        events: list[HealthEvent] = []
        for cgroup_id, watched in list(self.container_binaries.items()):
            path = self.resolver.path_of(cgroup_id)
            root = container_root(self.resolver, path) if path is not None else None
            if path is None or root is None:
                continue
            for target, before in list(watched.items()):
                now = identify(root + target, before)
                if now is None or now == before:
                    continue  # gone with its container, or unchanged
                watched[target] = now
                if (now.device, now.inode, now.build_id) == (
                    before.device,
                    before.inode,
                    before.build_id,
                ):
                    continue  # a touch: the same file and build
                events.append(self._replace_inside(cgroup_id, path, root, target, before, now))
        return events

    def _replace_inside(
        self,
        cgroup_id: int,
        cgroup_path: str,
        root: str,
        target: str,
        before: BinaryIdentity,
        now: BinaryIdentity,
    ) -> HealthEvent:
        """A container's own copy of `target` replaced: its probes resolved again from the new
        file through the container's root, attached, then the old inode's closed."""
        links = self.container_links.get(cgroup_id, {})
        indices = [i for i in links if self.specs[i].target == target]
        old: list[Link] = []
        failures: list[ProbeFailure] = []
        reattached = 0
        for index in indices:
            spec = self.specs[index]
            try:
                fresh = self._attach_one_inside(root, spec)
            except ProbeAttachError as exc:
                failures.append(_attach_failure(spec, exc))
            except StellaError as exc:
                failures.append(
                    _resolve_failure(spec, exc, "not reattached after the binary was replaced")
                )
            else:
                reattached += 1
                old.append(links[index])
                links[index] = fresh
                continue
            old.append(links.pop(index))  # no probe left at offsets of a file that changed
        self.runtime.detach_many(old)
        if self.config.mode_id == MODE_COVERAGE and indices:
            chosen = set(indices)
            self.runtime.forget_first_seen(chosen)
            self._seen = {key for key in self._seen if key[0] not in chosen}
        info = parse_cgroup_path(cgroup_path)
        where = f"container {info.container_id[:12]}" if info is not None else cgroup_path
        event = HealthEvent(
            "binary_replaced",
            target,
            f"replaced in {where} ({before.describe()} -> {now.describe()}), seen through {root}",
            reattached,
            len(failures),
            before.build_id,
            now.build_id,
        )
        if failures:
            self.probe_failures.extend(failures)
            self.sink.add_probe_failures(failures)
        if indices:
            self.sink.add_probe_reattachments([event.reattachment()])
        self.reattached["binary_replaced"] += reattached
        return event

    def _check_links(self) -> list[HealthEvent]:
        events: list[HealthEvent] = []
        watched: dict[LinkKey, Link] = {index: link for index, link in self.links.items()}
        for cgroup_id, links in self.container_links.items():
            watched.update({(cgroup_id, index): link for index, link in links.items()})
        lost = self.health.lost_links(self.runtime, watched, self._spec_of)
        on_host = [key for key in lost if isinstance(key, int)]
        if on_host:
            events.append(
                self._reattach(
                    on_host,
                    "link_lost",
                    None,
                    f"{len(on_host)} link(s) no longer attached (the fd closed or naming another "
                    "object): " + ", ".join(self.specs[i].symbol for i in on_host[:5]),
                )
            )
        in_containers = [key for key in lost if not isinstance(key, int)]
        if in_containers:
            events.append(self._reattach_inside(in_containers))
        return events

    def _spec_of(self, key: LinkKey) -> AttachSpec:
        return self.specs[key if isinstance(key, int) else key[1]]

    def _reattach_inside(self, lost: list[tuple[int, int]]) -> HealthEvent:
        """Lost links on a container's own binaries, attached again through its root."""
        failures: list[ProbeFailure] = []
        reattached = 0
        for cgroup_id, index in lost:
            links = self.container_links.get(cgroup_id, {})
            link = links.pop(index, None)
            if link is not None:
                self.runtime.abandon(link)  # its fd number may be someone else's now
            spec = self.specs[index]
            path = self.resolver.path_of(cgroup_id)
            root = container_root(self.resolver, path) if path is not None else None
            if root is None:
                continue  # the container is going away: nothing to watch there any more
            try:
                links[index] = self._attach_one_inside(root, spec)
                reattached += 1
            except ProbeAttachError as exc:
                failures.append(_attach_failure(spec, exc))
            except StellaError as exc:
                failures.append(_resolve_failure(spec, exc, "not reattached in the container"))
        if self.config.mode_id == MODE_COVERAGE:
            chosen = {index for _, index in lost}
            self.runtime.forget_first_seen(chosen)
            self._seen = {key for key in self._seen if key[0] not in chosen}
        names = ", ".join(self.specs[i].symbol for _, i in lost[:5])
        event = HealthEvent(
            "link_lost",
            None,
            f"{len(lost)} link(s) in container(s) no longer attached (the fd closed or naming "
            f"another object): {names}",
            reattached,
            len(failures),
        )
        if failures:
            self.probe_failures.extend(failures)
            self.sink.add_probe_failures(failures)
        self.sink.add_probe_reattachments([event.reattachment()])
        self.reattached["link_lost"] += reattached
        return event

    def _reattach(
        self,
        indices: list[int],
        reason: HealthReason,
        path: str | None,
        detail: str,
        builds: tuple[str | None, str | None] = (None, None),
    ) -> HealthEvent:
        """New links for `indices` (re-resolved from the binary on disk when it was replaced),
        then the old ones closed; the probes' gap counted in the seal, failures named there."""
        old: list[Link] = []
        fresh: dict[int, Link] = {}
        failures: list[ProbeFailure] = []
        if reason == "binary_replaced" and path is not None:
            # The ELF index is keyed by the file's identity: the new file is read once, for
            # every spec of the binary.
            self._reresolve_riders(path, set(indices))
        for index in indices:
            link = self.links.pop(index, None)
            if link is not None and reason == "link_lost":
                self.runtime.abandon(link)  # its fd number may be someone else's now
            elif link is not None:
                old.append(link)
            self.detached.discard(index)
            spec = self.specs[index]
            try:
                if reason == "binary_replaced":
                    spec = self._replace_spec(reresolve(spec, self.runtime.features))
                    if spec.attach_type == "usdt":
                        self.runtime.set_usdt_spec(spec.object_name, index, usdt_spec_c(spec))
                fresh[index] = self._attach(spec)
            except ProbeAttachError as exc:
                failures.append(_attach_failure(spec, exc))
            except StellaError as exc:
                failures.append(
                    _resolve_failure(spec, exc, "not reattached after the binary was replaced")
                )
        self.links.update(fresh)
        # The new build's links are in place before the old inode's close (~60 ms of RCU).
        self.runtime.detach_many(old)
        if self.config.mode_id == MODE_COVERAGE and indices:
            # The first hit of the new build (or of the restored link) is evidence again.
            chosen = set(indices)
            self.runtime.forget_first_seen(chosen)
            self._seen = {key for key in self._seen if key[0] not in chosen}
        event = HealthEvent(reason, path, detail, len(fresh), len(failures), *builds)
        if failures:
            self.probe_failures.extend(failures)
            self.sink.add_probe_failures(failures)
        if indices:
            # Named in the next seal; its probes counted in loss.by_reason["gap.<reason>"].
            self.sink.add_probe_reattachments([event.reattachment()])
        self.reattached[reason] += len(fresh)
        return event

    def _resolve_replaced_again(self) -> dict[int, ProbeFailure]:
        """Binaries replaced between planning and attaching (a deploy meanwhile: another build
        id on disk than the plan resolved): their specs resolved again from the file there, so
        no probe lands at the old build's offsets. Returns the specs that could not be."""
        self.health.watch_binaries(self.plan.specs)
        by_path: dict[str, list[AttachSpec]] = {}
        for spec in self.plan.specs:
            if spec.user_space:
                by_path.setdefault(spec.target, []).append(spec)
        unresolved: dict[int, ProbeFailure] = {}
        for path, specs in by_path.items():
            now = self.health.binaries.get(path)
            if now is None or all(spec.build_id == now.build_id for spec in specs):
                continue
            # The ELF index is keyed by the file's identity: the new file is read once.
            for spec in specs:
                try:
                    self._replace_spec(reresolve(spec, self.runtime.features))
                except StellaError as exc:
                    unresolved[spec.index] = _resolve_failure(
                        spec, exc, "not attached: the binary was replaced after planning"
                    )
        return unresolved

    def _replace_spec(self, spec: AttachSpec) -> AttachSpec:
        # Indices are positions in the plan (build_plan numbers specs as it appends them).
        assert self.plan.specs[spec.index].index == spec.index
        self.plan.specs[spec.index] = spec
        self.specs[spec.index] = spec
        return spec

    def _reresolve_riders(self, path: str, attached: set[int]) -> None:
        """Specs of the replaced binary without a link of their own (python:audit events
        riding another node's link): their records must name the new build too."""
        for spec in list(self.plan.specs):
            if spec.user_space and spec.target == path and spec.index not in attached:
                try:
                    self._replace_spec(reresolve(spec, self.runtime.features))
                except StellaError:
                    continue  # not attached: nothing to name in the seal

    def roll_window(self) -> None:
        """A new coverage window: forget first hits, re-attach detached probes."""
        self.process_pending()
        self.aggregate()
        self.runtime.clear_first_seen()
        self._seen.clear()
        for index in sorted(self.detached):
            self.links[index] = self._attach(self.specs[index])
        self.detached.clear()
        self._window_start_ns = time.monotonic_ns()

    def stop(self, final: bool = True) -> None:
        """Detach everything, read the last counters and events, seal the chain."""
        if not self.started:
            self.sink.close(final=final)
            return
        self._detach_all()
        self._drain_ring()
        if self.config.mode_id == MODE_COUNT:
            self._flush_kernel_counts()
        self._flush_aggregates()
        self._account_loss()
        self.runtime.close()
        self.started = False
        self.sink.close(final=final)

    def _drain_ring(self) -> None:
        """Read the ring to its end: a loop behind at the stop has more than one batch
        (_MAX_BATCH) waiting, and what is left unread would be neither recorded nor counted."""
        while True:
            self.runtime.poll(0)
            if not self._pending:
                return
            self.process_pending()

    # Records ----------------------------------------------------------------------------------
    def _timestamp(self, monotonic_ns: int) -> str:
        wall_ns = monotonic_ns + self._clock_offset_ns
        seconds, nanos = divmod(wall_ns, 1_000_000_000)
        if seconds != self._ts_second:
            # strftime once per second; the microseconds are appended per event (hot path).
            self._ts_second = seconds
            self._ts_prefix = format_timestamp(_EPOCH + dt.timedelta(seconds=seconds))[:-8]
        return f"{self._ts_prefix}.{nanos // 1000:06d}Z"

    def _base_record(
        self, spec: AttachSpec, event: StellaEvent, pid: int, raw: bytes = b""
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "node_hash": spec.node_hash,
            "function_name": spec.symbol,
            "probe_type": spec.probe_type,
            "observed_at": self._timestamp(event.ts_ns),
            "purl": spec.purl,
            "kind": KIND_NAMES.get(event.kind, "function"),
            "pid": pid,
            "comm": decode_text(bytes(event.comm)),
            "host": self.config.host,
        }
        if spec.user_space:
            record["binary_path"] = spec.target
            build_id = spec.build_id
            inside = self.container_binaries.get(event.cgroup_id)
            if inside is not None and spec.target in inside:
                build_id = inside[spec.target].build_id  # the container's own copy's build
            if build_id:
                record["build_id"] = build_id
        details = (
            self._details(event) if spec.audit_event is None else audit_record_details(spec, raw)
        )
        info = self.resolver.container_of(pid, event.cgroup_id)
        if info is not None:
            record.update(info.record_fields())
            details.update(info.details())
        if self.scope is not None:
            # The kernel let only the workload's events through: say which workload matched.
            details[RECORD_CONTEXT_KEY] = self.scope.context(info)
        if details:
            record["details"] = details
        return record

    def _details(self, event: StellaEvent) -> dict[str, Any]:
        kind = event.kind
        if kind in (KIND_FILE, KIND_EXEC):
            out: dict[str, Any] = {"path": decode_text(bytes(event.path))}
            if kind == KIND_FILE:
                out["flags"] = int(event.aux)
            return out
        if kind == KIND_NET:
            out = {}
            address = format_address(event.family, bytes(event.daddr))
            if address is not None:
                out["address"] = address
                out["port"] = int(event.dport)
            source = format_address(event.family, bytes(event.saddr))
            if source is not None and any(event.saddr):
                out["source_address"] = source
                out["source_port"] = int(event.sport)
            if event.aux in TCP_STATES and (event.sport or event.aux2):
                out["state"] = TCP_STATES[event.aux]
                out["old_state"] = TCP_STATES.get(event.aux2, str(event.aux2))
            return out
        if kind == KIND_TLS and event.aux:
            return {"bytes_requested": int(event.aux)}
        return {}

    def _emit(self, record: dict[str, Any]) -> None:
        self.sink.append(record)
        self.records_written += 1

    def _handle(self, event: StellaEvent, raw: bytes = b"") -> None:
        spec = self.specs.get(int(event.cookie))
        if spec is None:
            return
        self.observed[spec.index] = self.observed.get(spec.index, 0) + 1
        mode = self.config.mode_id
        if spec.in_kernel_mode:
            # The kernel already applied the mode (coverage probes were detached beforehand).
            self._emit(self._base_record(spec, event, int(event.pid)))
            return
        if spec.audit_event is not None:
            # The decoded safe arguments are what distinguishes two audit events of a node.
            details = audit_record_details(spec, raw)
            detail_key: tuple[Any, ...] = tuple(sorted(details.items()))
        else:
            detail_key = (
                bytes(event.path),
                event.family,
                bytes(event.daddr),
                event.dport,
                event.aux,
            )
        if event.kind in (KIND_FILE, KIND_EXEC) and not self.config.path_allowed(
            decode_text(bytes(event.path))
        ):
            self._user_filtered += 1
            return
        if mode == MODE_TRACE:
            self._emit(self._base_record(spec, event, int(event.pid), raw))
        elif mode == MODE_COVERAGE:
            key = (spec.index, event.cgroup_id, *detail_key)
            if key not in self._seen:
                self._seen.add(key)
                self._emit(self._base_record(spec, event, int(event.pid), raw))
        else:
            key = (spec.index, event.pid, *detail_key)
            aggregate = self._aggregates.get(key)
            if aggregate is None:
                self._aggregates[key] = _Aggregate(1, event.ts_ns, event.ts_ns, event, raw)
            else:
                aggregate.count += 1
                aggregate.last_ns = event.ts_ns

    def _flush_aggregates(self) -> None:
        aggregates, self._aggregates = self._aggregates, {}
        for key, aggregate in aggregates.items():
            spec = self.specs[key[0]]
            record = self._base_record(
                spec, aggregate.event, int(aggregate.event.pid), aggregate.raw
            )
            record["count"] = aggregate.count
            record["first_observed_at"] = self._timestamp(aggregate.first_ns)
            record["last_observed_at"] = self._timestamp(aggregate.last_ns)
            record["observed_at"] = record["last_observed_at"]
            self._emit(record)

    def _flush_kernel_counts(self) -> None:
        now_ns = time.monotonic_ns()
        for node, pid, cgroup_id, total, comm in self.runtime.counts():
            key = (node, pid, cgroup_id)
            delta = total - self._count_base.get(key, 0)
            if delta <= 0:
                continue
            self._count_base[key] = total
            spec = self.specs.get(node)
            if spec is None:
                continue
            event = StellaEvent(
                ts_ns=now_ns, cookie=node, cgroup_id=cgroup_id, pid=pid, kind=spec.kind
            )
            event.comm = comm[:15]
            record = self._base_record(spec, event, pid)
            record["count"] = delta
            record["first_observed_at"] = self._timestamp(max(self._window_start_ns, 0))
            record["last_observed_at"] = record["observed_at"]
            self.observed[node] = self.observed.get(node, 0) + delta
            self._emit(record)

    def _account_loss(self) -> None:
        stats = self.runtime.stats() if self.runtime.objects else self._stats_base
        delta = [now - before for now, before in zip(stats, self._stats_base, strict=True)]
        self._stats_base = list(stats)
        dropped = delta[STAT_RINGBUF_DROPPED] + delta[STAT_COUNTER_FULL]
        self.drops["ring_buffer_full"] += delta[STAT_RINGBUF_DROPPED]
        self.drops["counter_map_full"] += delta[STAT_COUNTER_FULL]
        sampled = delta[STAT_SAMPLED_OUT]
        filtered = delta[STAT_FILTERED_OUT] + self._user_filtered
        self._user_filtered = 0
        if dropped or sampled or filtered:
            self.sink.add_loss(
                ring_buffer_dropped=dropped, sampled_out=sampled, filtered_out=filtered
            )
        self.loss_totals["ring_buffer_dropped"] += dropped
        self.loss_totals["sampled_out"] += sampled
        self.loss_totals["filtered_out"] += filtered

    def status(self) -> dict[str, Any]:
        totals = self.loss_totals
        return {
            "mode": self.config.mode,
            "attached": len(self.links),
            "detached": len(self.detached),
            "nodes_observed": len(self.observed),
            "nodes_planned": len(self.specs),
            "records": self.records_written,
            "reattached": sum(self.reattached.values()),
            **totals,
        }


def _unobservable_failure(item: Unobservable) -> ProbeFailure:
    return ProbeFailure(
        item.node_hash, item.symbol, item.purl, item.binary_path, item.errno, item.reason
    )


def _timed_out(spec: AttachSpec, timeout_ms: int) -> ProbeFailure:
    return ProbeFailure(
        spec.node_hash,
        spec.symbol,
        spec.purl,
        spec.target if spec.user_space else None,
        errno.ETIME,
        f"not attached: the attach timeout ({timeout_ms} ms) ran out before its turn",
    )


def _resolve_failure(spec: AttachSpec, exc: StellaError, what: str) -> ProbeFailure:
    """A spec that could not be resolved again from its binary (symbol gone, build id not
    the map's): named in the seal with the errno when there is one (ENOENT: not found)."""
    number = getattr(exc, "errno_number", None)
    return ProbeFailure(
        spec.node_hash,
        spec.symbol,
        spec.purl,
        spec.target,
        number if isinstance(number, int) else None,
        f"{what}: {exc.describe()}",
    )


def _attach_failure(spec: AttachSpec, exc: ProbeAttachError) -> ProbeFailure:
    return ProbeFailure(
        spec.node_hash, spec.symbol, spec.purl, spec.target, exc.errno_number, exc.message
    )


def usdt_spec_c(spec: AttachSpec) -> UsdtSpecC:
    """The kernel's view of a USDT node: where its first two arguments live, str layout."""
    out = UsdtSpecC(py_str_data=str_data_offset(spec.python_version))
    for position, arg in enumerate(spec.usdt_args[:2]):
        out.args[position] = UsdtArgC(value=arg.value, reg_off=arg.reg_offset, kind=arg.kind)
    return out


def audit_record_details(spec: AttachSpec, raw: bytes) -> dict[str, Any]:
    """The safe arguments of a python:audit event (its name, always; see usdt.AUDIT_EVENTS)."""
    header = ctypes.sizeof(StellaEvent)
    event = spec.audit_event or ""
    if len(raw) < header + ctypes.sizeof(AuditTail):
        return {"event": event}
    tail = AuditTail.from_buffer_copy(raw, header)
    objects = [
        PyObjectSnapshot(decode_text(bytes(o.type)), bytes(o.head), bytes(o.text).split(b"\0")[0])
        for o in tail.obj
    ]
    return audit_details(event, int(tail.count), objects, spec.python_version)
