"""The root Typer app and its command groups (one module per group)."""

from __future__ import annotations

import typer

from .. import __version__
from .demo import demo
from .lazy import LazyGroup, LazyRootGroup

# The command groups, imported when used; each group's help is written here only.
GROUPS: dict[str, LazyGroup] = {
    "keys": LazyGroup(
        "stella_bundle.cli.keys", "Generate signing keys and show their fingerprints."
    ),
    "trust-root": LazyGroup(
        "stella_bundle.cli.trust_root", "Manage trust-root.json (keys, roles, thresholds, expiry)."
    ),
    "attest": LazyGroup(
        "stella_bundle.cli.attest", "Sign and verify in-toto attestations (DSSE, Sigstore)."
    ),
    "schema": LazyGroup(
        "stella_bundle.cli.schema", "Validate documents against the shipped JSON Schemas."
    ),
    "function-map": LazyGroup(
        "stella_bundle.cli.function_map", "Generate and verify function maps."
    ),
    "observations": LazyGroup(
        "stella_bundle.cli.observations", "Query and import observation records."
    ),
    "signals": LazyGroup(
        "stella_bundle.cli.signals", "Evidence chains: collect, verify, inspect, prune."
    ),
    "probes": LazyGroup(
        "stella_bundle.cli.probes", "eBPF probe objects and kernel feature detection."
    ),
    "bundle": LazyGroup(
        "stella_bundle.cli.bundle",
        "Build, inspect, split, join and verify .stella.bundle.tgz archives.",
    ),
    "tetragon": LazyGroup(
        "stella_bundle.cli.tetragon",
        "Cilium Tetragon bridge: TracingPolicy from a map, events into evidence.",
    ),
    "agent": LazyGroup(
        "stella_bundle.cli.agent",
        "The runtime agent: a service that collects for a signed function map.",
    ),
    "serve": LazyGroup(
        "stella_bundle.cli.serve", "Serve the REST API and the coverage dashboard (docs/api.md)."
    ),
    "store": LazyGroup(
        "stella_bundle.cli.store", "Create, migrate and inspect an observation store."
    ),
}


class _Root(LazyRootGroup):
    lazy_groups = GROUPS


app = typer.Typer(
    name="stella",
    help="Airgap-first runtime evidence: function maps, eBPF observations, offline bundles.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=_Root,
    # Plain help: Rich's help renderer imports markdown-it and costs ~0.15 s of every start.
    rich_markup_mode=None,
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


app.command("demo")(demo)
