"""`stella agent run`: the collector as a long-running service configured by stellaops.yaml."""

from __future__ import annotations

from pathlib import Path

import typer

from .output import console, error_line

# Its help is its line in cli/app.py's GROUPS table.
app = typer.Typer(
    no_args_is_help=True,
)


@app.command("run")
def run(
    config: Path = typer.Option(
        ...,
        "--config",
        help="stellaops.yaml: runtime_agent: (map or map directory, probes, export, metrics) "
        "and signals: (signing key, rotation, mode).",
    ),
    metrics_listen: str | None = typer.Option(
        None,
        "--metrics-listen",
        help="HOST:PORT for /metrics, /healthz, /readyz (default: runtime_agent.metrics.listen, "
        "else 127.0.0.1:9464).",
    ),
    duration: float | None = typer.Option(
        None, "--duration", help="Stop after this many seconds (default: run until SIGTERM/SIGINT)."
    ),
) -> None:
    """Collect for the configured function map, or every signed map of a directory (one chain
    each, reloaded on change), until stopped, serving metrics and health."""
    from ..agent.config import load_agent_settings
    from ..agent.endpoint import parse_listen
    from ..agent.service import run_service, summary
    from ..collector.run import prepare

    settings = load_agent_settings(config)
    listen = settings.metrics_listen
    if metrics_listen is not None:
        parse_listen(metrics_listen)  # refused before anything is written
        listen = metrics_listen
    if settings.maps is not None:
        from ..agent.supervisor import MapSupervisor

        MapSupervisor(settings, listen, say=error_line).run(duration)
        return
    session = prepare(settings.start)
    run_service(
        session,
        metrics_listen=listen,
        verify_every_seconds=settings.verify_every_seconds,
        least_stall_seconds=settings.stall_seconds,
        duration=duration,
        say=error_line,
    )
    console.print(summary(session))
