"""Every command that prints a result goes through the report registry: its `--format` offers
exactly its kind's formats, and its code prints through `emit`, never by itself. Commands are
listed here by what they print; a new command must be placed in one list."""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from typing import Any

import pytest
import typer.main

from stella_bundle.cli.app import GROUPS
from stella_bundle.report import kinds
from stella_bundle.report.registry import ResultKind

# Through the registry: command → the kind of result it prints.
THROUGH_REGISTRY: dict[str, ResultKind] = {
    "function-map verify": kinds.COVERAGE,
    "function-map generate": kinds.MAP_WRITTEN,
    "bundle verify": kinds.BUNDLE_REPORT,
    "signals verify-chain": kinds.CHAINS,
    "signals status": kinds.STATUSES,
    "signals inspect": kinds.INSPECTION,
    "signals prune": kinds.PRUNES,
    "observations query": kinds.RECORDS,  # kinds.SYMBOLS with --summary: the same formats
    "observations timeline": kinds.TIMELINE,
    "probes doctor": kinds.DOCTOR,
    "attest verify": kinds.ATTESTATION,
    "probes list": kinds.PROBES,
    "schema list": kinds.SCHEMAS,
    "schema validate": kinds.SCHEMA_VALIDATION,
    "tetragon policy": kinds.POLICY,
    "tetragon ingest": kinds.TETRAGON_INGEST,
    "serve token list": kinds.TOKENS,
    "bundle inspect": kinds.BUNDLE_CLAIMS,
    "keys fingerprint": kinds.FINGERPRINT,
    "trust-root show": kinds.TRUST_ROOT,
    "store init": kinds.STORE_INIT,
    "store migrate": kinds.STORE_MIGRATE,
    "store status": kinds.STORE_STATUS,
    "observations import": kinds.IMPORT,
    "observations ingest": kinds.STORE_INGEST,
    "observations prune": kinds.STORE_PRUNE,
    "tetragon hot-symbols": kinds.HOT_SYMBOLS,
    "keys generate": kinds.KEY_GENERATED,
    "trust-root init": kinds.TRUST_ROOT_WRITTEN,
    "trust-root add-key": kinds.TRUST_ROOT_WRITTEN,
    "trust-root set-sigstore": kinds.TRUST_ROOT_WRITTEN,
    "attest sign": kinds.STATEMENT_SIGNED,
    "bundle build": kinds.BUNDLE_BUILT,
    "bundle split": kinds.BUNDLE_SPLIT,
    "bundle join": kinds.BUNDLE_JOINED,
    "serve token add": kinds.TOKEN_ISSUED,
    "serve token remove": kinds.TOKEN_REMOVED,
}
# Commands with --format printing a dict or lines themselves: none left (issue 10).
OWN_PRINTING: set[str] = set()
# No --format: the output is itself a published document (`schema show` prints the JSON Schema).
DOCUMENT_ONLY = {"schema show"}
# Services and sessions: they run until stopped and log, they print no result.
NO_RESULT = {"agent run", "signals start", "demo"}


def _leaves() -> dict[str, Any]:
    found: dict[str, Any] = {"demo": None}
    for name, group in GROUPS.items():
        command = typer.main.get_group(importlib.import_module(group.module).app)
        found.update(_walk(name, command))
    return found


def _walk(prefix: str, command: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for sub, leaf in getattr(command, "commands", {}).items():
        if getattr(leaf, "commands", None) is not None:
            found.update(_walk(f"{prefix} {sub}", leaf))
        else:
            found[f"{prefix} {sub}"] = leaf
    return found


def test_every_command_is_placed() -> None:
    leaves = set(_leaves())
    placed = set(THROUGH_REGISTRY) | OWN_PRINTING | DOCUMENT_ONLY | NO_RESULT
    assert leaves - placed == set(), "place the new command in one list"
    assert placed - leaves == set(), "a listed command no longer exists"
    assert not (set(THROUGH_REGISTRY) & (OWN_PRINTING | DOCUMENT_ONLY))
    leaves_by_name = _leaves()
    for name in DOCUMENT_ONLY:  # a --format there would mean a result to route
        params = getattr(leaves_by_name[name], "params", [])
        assert not [p for p in params if "--format" in getattr(p, "opts", ())], name


@pytest.mark.parametrize("name", sorted(THROUGH_REGISTRY))
def test_format_option_offers_the_kind_formats(name: str) -> None:
    leaf = _leaves()[name]
    (option,) = [p for p in leaf.params if "--format" in getattr(p, "opts", ())]
    # typer offers the members of the option's enum annotation.
    choices = tuple(str(choice) for choice in option.type_descriptor.annotation)
    assert choices == THROUGH_REGISTRY[name].formats
    assert str(option.default) == "table"


_PRINTING = {"emit_json", "print", "write", "dumps", "echo"}


@pytest.mark.parametrize("name", sorted(THROUGH_REGISTRY))
def test_command_prints_only_through_emit(name: str) -> None:
    """The command's function (and the module helpers it calls) call `emit`, and never print
    a result themselves (emit_json, console.print, sys.stdout.write, json.dumps, echo)."""
    group, *path = name.split(" ")
    typer_app = importlib.import_module(GROUPS[group].module).app
    for subgroup in path[:-1]:  # `serve token list`: the token app within serve's
        (info,) = [g for g in typer_app.registered_groups if g.name == subgroup]
        typer_app = info.typer_instance
    registered = {c.name: c.callback for c in typer_app.registered_commands}
    function = registered[path[-1]]
    calls = _calls(function, inspect.getmodule(function), set())
    assert "emit" in calls
    # bundle verify also says where it wrote the report files: lines, not the result.
    allowed = {"print"} if name == "bundle verify" else set()
    assert calls & _PRINTING <= allowed, calls & _PRINTING


def _calls(function: Any, module: Any, seen: set[str]) -> set[str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            target = node.func
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            names.add(name)
            helper = getattr(module, name, None)
            local = inspect.isfunction(helper) and inspect.getmodule(helper) is module
            if name not in seen and local:
                seen.add(name)
                names |= _calls(helper, module, seen)
    return names
