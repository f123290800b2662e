"""`stella signals start`: run the eBPF collector into a signed, hash-chained evidence chain."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.live import Live
from rich.table import Table

from ..agent.endpoint import parse_listen
from ..collector.events import MODES
from ..errors import ConfigError
from .output import console, error_line
from .signals import app

if TYPE_CHECKING:
    from ..collector.session import Collector


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
    from ..agent.service import run_service, summary
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
    collector = session.collector
    if quiet or not console.is_terminal:
        run_service(
            session,
            metrics_listen=metrics_listen,
            verify_every_seconds=verify_every,
            duration=duration,
            say=error_line,
        )
    else:
        with Live(_status_table(collector), console=console, refresh_per_second=2) as live:
            run_service(
                session,
                metrics_listen=metrics_listen,
                verify_every_seconds=verify_every,
                duration=duration,
                on_tick=lambda c: live.update(_status_table(c)),
                say=error_line,
            )
    console.print(summary(session))
