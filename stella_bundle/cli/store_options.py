"""The options every store command shares: where the store is, and the config naming it."""

from __future__ import annotations

from pathlib import Path

import typer

STORE_HELP = (
    "Store URL: sqlite:///PATH, postgresql://… or memory:// (default: observation_store.url "
    "of --config, else sqlite:///stella-observations.sqlite)."
)
CONFIG_HELP = "stellaops.yaml with an observation_store: section (default: none)."


def store_url_option() -> str | None:
    return typer.Option(None, "--store", help=STORE_HELP)  # type: ignore[no-any-return]


def config_option() -> Path | None:
    return typer.Option(None, "--config", help=CONFIG_HELP)  # type: ignore[no-any-return]
