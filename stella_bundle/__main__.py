"""`python -m stella_bundle` is the `stella` command."""

from .cli import entrypoint

entrypoint()
