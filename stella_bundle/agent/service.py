"""A collection session's life as a service, for `signals start` and `agent run` alike:
listen (optional), attach, collect until SIGTERM/SIGINT or a duration, detach, final seal.

The order matters to operators: the listener answers before attaching (liveness during a long
attach), readiness turns on once probes are attached and off before the final seal, and the
last metric values (probes 0, the final seal counted) are set before the listener closes.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from .instrument import DEFAULT_VERIFY_EVERY_SECONDS, STALL_MIN_SECONDS, Instrumentation
from .sdnotify import Notifier

if TYPE_CHECKING:
    from ..collector.run import PreparedSession
    from ..collector.session import Collector


def run_service(
    session: PreparedSession,
    *,
    metrics_listen: str | None = None,
    verify_every_seconds: float = DEFAULT_VERIFY_EVERY_SECONDS,
    least_stall_seconds: float = STALL_MIN_SECONDS,
    duration: float | None = None,
    on_tick: Callable[[Collector], None] | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> None:
    """Run `session` to its final seal; `say` gets the operator's lines (warnings, progress).

    SIGTERM/SIGINT are taken over before attaching: a stop asked for while 2,000 probes attach
    still ends in a final seal, right after the attach, instead of killing the process.
    """
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, on_signal)
    try:
        listen = _Listen(metrics_listen, verify_every_seconds, least_stall_seconds)
        _run(session, stop, listen, duration, on_tick, say)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclass(frozen=True)
class _Listen:
    """The listener's settings: where (None: no listener), how often to verify, least stall."""

    address: str | None
    verify_every_seconds: float
    least_stall: float


def _run(
    session: PreparedSession,
    stop: threading.Event,
    listen: _Listen,
    duration: float | None,
    on_tick: Callable[[Collector], None] | None,
    say: Callable[[str], None],
) -> None:
    for note in session.notes:
        say(f"warning: {note}")
    collector = session.collector
    instrumentation: Instrumentation | None = None
    try:
        if listen.address is not None:
            instrumentation = Instrumentation(
                session, listen.address, listen.verify_every_seconds, None, listen.least_stall
            )
            instrumentation.start()
            say(f"metrics: {instrumentation.url}")
        collector.start()
    except BaseException:
        session.writer.close(final=False)
        if instrumentation is not None:
            instrumentation.close()
        raise
    if instrumentation is not None:
        instrumentation.collecting()
    unobservable = len(session.plan.unobservable)
    for failure in collector.probe_failures[unobservable:]:
        say(
            f"warning: not attached: {failure.purl}#{failure.function_name} at "
            f"{failure.binary_path} ({failure.error}); named in the next seal"
        )
    collecting = (
        f"collecting: {len(collector.links)} probes attached, mode {collector.config.mode}, "
        f"chain {session.chain_dir}, {session.scope_summary}"
    )
    say(collecting)
    for warning in session.warnings:
        say(f"WARNING: {warning}")
    # systemd (Type=notify): started once probes are attached; the watchdog restarts a loop
    # that stopped turning, as a liveness probe does on Kubernetes.
    notifier = Notifier()
    notifier.ready(collecting)

    said = 0

    def tick(c: Collector) -> None:
        nonlocal said
        notifier.watchdog()
        # Health events (a binary replaced, a link lost) in the operator's log as they happen.
        for event in c.health_events[said:]:
            say(f"warning: {event.describe()}")
        said = len(c.health_events)
        if instrumentation is not None:
            instrumentation.tick(c)
        if on_tick is not None:
            on_tick(c)

    try:
        collector.run(duration, should_stop=stop.is_set, on_tick=tick)
    finally:
        notifier.stopping("detaching probes, writing the final seal")
        if instrumentation is not None:
            instrumentation.stopping()
        try:
            collector.stop(final=True)
        finally:
            if instrumentation is not None:
                instrumentation.close()


def summary(session: PreparedSession) -> str:
    """The line said after the final seal."""
    status = session.collector.status()
    return (
        f"stopped: {status['records']} records, {status['nodes_observed']}/"
        f"{status['nodes_planned']} nodes observed, lost: ring buffer "
        f"{status['ring_buffer_dropped']}, sampled out {status['sampled_out']}, filtered out "
        f"{status['filtered_out']}; final seal in {session.chain_dir}"
    )
