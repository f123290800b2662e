"""`stella signals start`: run the eBPF collector into a signed, hash-chained evidence chain."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer
from rich.live import Live
from rich.table import Table

from ..agent.endpoint import parse_listen
from ..collector.events import MODES
from ..errors import ConfigError
from .output import console, error_line
from .signals import app

if TYPE_CHECKING:
    from ..agent.instrument import Instrumentation
    from ..collector.session import Collector


def _url_host(listen: str) -> str:
    host = listen.rpartition(":")[0]
    return host if host.startswith("[") or ":" not in host else f"[{host}]"


def _status_table(collector: Collector) -> Table:
    table = Table(title="stella collector", show_header=False)
    for key, value in collector.status().items():
        table.add_row(key, str(value))
    return table


@app.command("start")
def start(
    function_map: Path = typer.Option(..., "--function-map", help="FM.json or FM.dsse.json."),
    target: Path | None = typer.Option(
        None,
        "--target",
        help="Evidence directory, chains inside (default: signals.output_directory).",
    ),
    key: Path | None = typer.Option(
        None,
        "--key",
        help="Collector signing key (PEM) for seals (default: signals.signing.key_file).",
    ),
    mode: str | None = typer.Option(
        None, "--mode", help=f"One of: {', '.join(MODES)} (default coverage)."
    ),
    window: float | None = typer.Option(
        None, "--window", help="Coverage window in seconds (default 1800)."
    ),
    aggregation_window: str | None = typer.Option(
        None,
        "--aggregation-window",
        help="Count/flush interval, e.g. 1000ms or 1s (default: 1000ms).",
    ),
    sampling_rate: float | None = typer.Option(
        None, "--sampling-rate", help="Trace mode: fraction of hits kept, in (0, 1] (default: 1)."
    ),
    pid: list[int] = typer.Option(
        [], "--pid", help="Only these processes (repeatable; default: every process)."
    ),
    container: list[str] = typer.Option(
        [], "--container", help="Only these container ids (repeatable; default: every container)."
    ),
    path_allow: list[str] = typer.Option(
        [], "--path-allow", help="File/exec path glob to keep (repeatable; default: every path)."
    ),
    path_deny: list[str] = typer.Option(
        [], "--path-deny", help="File/exec path glob to drop (repeatable; default: none dropped)."
    ),
    duration: float | None = typer.Option(
        None, "--duration", help="Stop after this many seconds (default: run until SIGTERM/SIGINT)."
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="stellaops.yaml, signals: section (default: none, options and built-in defaults).",
    ),
    probes_dir: Path | None = typer.Option(
        None,
        "--probes-dir",
        help="Probe objects and their probes.lock.json, e.g. from a bundle (default: the packaged set).",
    ),
    chain_id: str | None = typer.Option(
        None, "--chain-id", help="Chain name (default SERVICE-HOST)."
    ),
    trust_root: Path | None = typer.Option(
        None,
        "--trust-root",
        help="Verify a signed function map against this trust root (default: signature not checked).",
    ),
    container_metadata: Path | None = typer.Option(
        None,
        "--container-metadata",
        help="JSON: container id → pod_name, namespace, image_digest (default: none).",
    ),
    metrics_listen: str | None = typer.Option(
        None,
        "--metrics-listen",
        help="Serve /metrics, /healthz and /readyz on HOST:PORT, e.g. 127.0.0.1:9464 "
        "(default: no listener).",
    ),
    verify_every: float = typer.Option(
        60.0,
        "--verify-every",
        help="Seconds between verifications of the last two coverage windows, for "
        "stella_observation_rate (default 60; with --metrics-listen).",
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No live status display."),
) -> None:
    """Attach probes for a function map and write observations until stopped (SIGTERM/SIGINT)."""
    from ..agent.instrument import Instrumentation
    from ..collector.run import StartOptions, prepare

    if mode is not None and mode not in MODES:
        raise ConfigError(f"expected one of {', '.join(MODES)}, got {mode!r}", field="--mode")
    if metrics_listen is not None:
        parse_listen(metrics_listen)  # a bad address is refused before anything is written
    if not verify_every > 0:
        raise ConfigError(
            f"expected a positive number of seconds, got {verify_every}", field="--verify-every"
        )
    session = prepare(
        StartOptions(
            function_map=function_map,
            target=target,
            key=key,
            mode=mode,
            window_seconds=window,
            aggregation_window=aggregation_window,
            sampling_rate=sampling_rate,
            pids=tuple(pid),
            containers=tuple(container),
            path_allow=tuple(path_allow),
            path_deny=tuple(path_deny),
            config=config,
            probes_dir=probes_dir,
            chain_id=chain_id,
            trust_root=trust_root,
            container_metadata=container_metadata,
        )
    )
    for note in session.notes:
        error_line(f"warning: {note}")
    collector = session.collector
    instrumentation: Instrumentation | None = None
    try:
        if metrics_listen is not None:
            instrumentation = Instrumentation(session, metrics_listen, verify_every)
            instrumentation.start()
            error_line(
                f"metrics: http://{_url_host(metrics_listen)}:{instrumentation.port}/metrics"
            )
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
        error_line(
            f"warning: not attached: {failure.purl}#{failure.function_name} at "
            f"{failure.binary_path} ({failure.error}); named in the next seal"
        )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, on_signal)
    error_line(
        f"collecting: {len(collector.links)} probes attached, mode {collector.config.mode}, "
        f"chain {session.chain_dir}"
    )

    def on_tick(c: Collector) -> None:
        if instrumentation is not None:
            instrumentation.tick(c)
        if live is not None:
            live.update(_status_table(c))

    live: Live | None = None
    try:
        if quiet or not console.is_terminal:
            collector.run(duration, should_stop=stop.is_set, on_tick=on_tick)
        else:
            with Live(_status_table(collector), console=console, refresh_per_second=2) as live:
                collector.run(duration, should_stop=stop.is_set, on_tick=on_tick)
            live = None
    finally:
        if instrumentation is not None:
            instrumentation.stopping()
        try:
            collector.stop(final=True)
        finally:
            if instrumentation is not None:
                instrumentation.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    status = collector.status()
    console.print(
        f"stopped: {status['records']} records, {status['nodes_observed']}/{status['nodes_planned']} "
        f"nodes observed, lost: ring buffer {status['ring_buffer_dropped']}, sampled out "
        f"{status['sampled_out']}, filtered out {status['filtered_out']}; final seal in {session.chain_dir}"
    )
