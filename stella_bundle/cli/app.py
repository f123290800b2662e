"""The root Typer app and its command groups (one module per group)."""

from __future__ import annotations

import typer

from .. import __version__
from . import (
    agent,
    attest,
    bundle,
    function_map,
    keys,
    observations,
    probes,
    schema,
    serve,
    signals,
    store,
    tetragon,
    trust_root,
)
from .demo import demo

app = typer.Typer(
    name="stella",
    help="Airgap-first runtime evidence: function maps, eBPF observations, offline bundles.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stella {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    verbose: bool = typer.Option(False, "--verbose", help="Print tracebacks for errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """stella: which of our code actually runs in production, with proof."""


app.add_typer(keys.app, name="keys")
app.add_typer(trust_root.app, name="trust-root")
app.add_typer(attest.app, name="attest")
app.add_typer(schema.app, name="schema")
app.add_typer(function_map.app, name="function-map")
app.add_typer(observations.app, name="observations")
app.add_typer(signals.app, name="signals")
app.add_typer(probes.app, name="probes")
app.add_typer(bundle.app, name="bundle")
app.add_typer(tetragon.app, name="tetragon")
app.add_typer(store.app, name="store")
app.add_typer(agent.app, name="agent")
app.add_typer(serve.app, name="serve")
app.command("demo")(demo)
