"""Inputs that used to crash a command (exit 3, a traceback cause) give one line and exit 2.

Class 8 of issue 9, parametrised over every command that reads JSON or NDJSON, each given,
in each of its JSON inputs: an integer of 5,000 digits (past Python's 4,300-digit conversion
limit), JSON nested 100,000 deep, and, where a time is read, `9999-12-31T23:59:59-23:59`
(which overflows when moved to UTC). Also: an unreadable seal in a chain (a directory, a FIFO
that would block a plain `open`), `bundle join --output` naming a directory, and a file that
cannot be read because of permissions (the CLI run with CAP_DAC_OVERRIDE dropped, so root
is refused too) named in one line, not a usage box. Nothing is written outside the output
directory, and each answer comes within seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.bundle.bundle_helpers import BundleInputs, make_inputs, snapshot
from tests.conftest import REPO_ROOT, CliResult, cpu_seconds

SECONDS = 30  # CPU seconds (tests/conftest.py cpu_seconds), for a loaded machine
BIG_INT = b'{"n": 1' + b"0" * 5000 + b"}"
DEEP = b"[" * 100_000 + b"]" * 100_000
OVERFLOW_TIME = "9999-12-31T23:59:59-23:59"

PAYLOADS = {"big-int": BIG_INT, "deep": DEEP}


@dataclass
class World:
    """Valid inputs for every command; one of them is replaced by the hostile file."""

    root: Path
    inputs: BundleInputs
    keys: Any
    observations: Path
    bundle: Path
    envelope: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, test_keys: Any) -> World:
    root = tmp_path_factory.mktemp("crash-world")
    inputs = make_inputs(root / "inputs", test_keys)
    observations = root / "good.ndjson"
    observations.write_text("".join(json.dumps(r) + "\n" for r in inputs.records[:5]))
    bundle = root / "garbage.stella.bundle.tgz"
    bundle.write_bytes(b"not a bundle")
    return World(root, inputs, test_keys, observations, bundle, inputs.function_map_envelope)


Args = Callable[[World, Path, Path], list[Any]]

# name → (file name of the hostile input, the command line using it, its output dir)
JSON_COMMANDS: dict[str, tuple[str, Args]] = {
    "keys-fingerprint": ("k.pub.json", lambda w, h, o: ["keys", "fingerprint", h]),
    "trust-root-show": ("root.json", lambda w, h, o: ["trust-root", "show", h]),
    "trust-root-add-key(root)": ("root.json", lambda w, h, o: [
        "trust-root", "add-key", h, "--key", w.keys.public("builder"), "--role", "builder",
    ]),
    "trust-root-add-key(key)": ("k.pub.json", lambda w, h, o: [
        "trust-root", "add-key", _copy(w.keys.trust_root, o), "--key", h, "--role", "builder",
    ]),
    "trust-root-set-sigstore": ("trusted_root.json", lambda w, h, o: [
        "trust-root", "set-sigstore", _copy(w.keys.trust_root, o), "--trusted-root", h,
        "--identity", "a@example.com", "--issuer", "https://issuer.example",
    ]),
    "attest-sign": ("doc.json", lambda w, h, o: [
        "attest", "sign", "--input", h, "--predicate-type", "https://example.com/p/v1",
        "--key", w.keys.private("builder"), "--output", o / "doc.dsse.json",
    ]),
    "attest-verify(envelope)": ("doc.dsse.json", lambda w, h, o: [
        "attest", "verify", h, "--trust-root", w.keys.trust_root, "--role", "builder",
    ]),
    "attest-verify(trust-root)": ("root.json", lambda w, h, o: [
        "attest", "verify", w.envelope, "--trust-root", h, "--role", "function-map",
    ]),
    "schema-validate": ("doc.json", lambda w, h, o: ["schema", "validate", h]),
    "schema-validate(ndjson)": ("obs.ndjson", lambda w, h, o: ["schema", "validate", h]),
    "function-map-generate": ("sbom.cdx.json", lambda w, h, o: [
        "function-map", "generate", "--sbom", h, "--service", "s", "--output", o / "fm.json",
    ]),
    "function-map-verify(map)": ("fm.json", lambda w, h, o: [
        "function-map", "verify", "--function-map", h, "--observations", w.observations,
    ]),
    "function-map-verify(observations)": ("obs.ndjson", lambda w, h, o: [
        "function-map", "verify", "--function-map", w.inputs.function_map,
        "--observations", h,
    ]),
    "function-map-verify(trust-root)": ("root.json", lambda w, h, o: [
        "function-map", "verify", "--function-map", w.envelope, "--trust-root", h,
        "--observations", w.observations,
    ]),
    "observations-import": ("obs.ndjson", lambda w, h, o: [
        "observations", "import", h, "--target", o / "evidence",
        "--key", w.keys.private("collector"),
    ]),
    "observations-query": ("obs.ndjson", lambda w, h, o: [
        "observations", "query", "--observations", h,
    ]),
    "observations-timeline": ("obs.ndjson", lambda w, h, o: [
        "observations", "timeline", "--observations", h,
    ]),
    "observations-ingest": ("obs.ndjson", lambda w, h, o: [
        "observations", "ingest", h, "--store", f"sqlite:///{o / 'store.sqlite'}",
    ]),
    "tetragon-hot-symbols": ("obs.ndjson", lambda w, h, o: [
        "tetragon", "hot-symbols", "--observations", h,
    ]),
    "tetragon-policy": ("fm.json", lambda w, h, o: [
        "tetragon", "policy", "--function-map", h, "--output", o / "policy.yaml",
    ]),
    "tetragon-ingest(map)": ("fm.json", lambda w, h, o: [
        "tetragon", "ingest", w.observations, "--function-map", h,
        "--target", o / "evidence", "--key", w.keys.private("collector"),
    ]),
    "bundle-build(map)": ("fm.json", lambda w, h, o: [
        "bundle", "build", "--function-map", h, "--evidence", w.inputs.evidence,
        "--key", w.keys.private("builder"), "--output", o / "b.stella.bundle.tgz",
    ]),
    "bundle-verify(trust-root)": ("root.json", lambda w, h, o: [
        "bundle", "verify", w.bundle, "--trust-root", h, "--output-dir", o,
    ]),
    "bundle-join(index)": ("b.parts.json", lambda w, h, o: [
        "bundle", "join", h, "--output", o / "b.stella.bundle.tgz",
    ]),
    "signals-inspect(seal)": ("0000000001.seal.dsse.json", lambda w, h, o: [
        "signals", "inspect", h,
    ]),
}  # fmt: skip


def _copy(source: Path, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(source, directory / source.name))


def _one_line_exit_2(result: CliResult, started: float, named: Path | str) -> None:
    elapsed = cpu_seconds() - started
    assert elapsed < SECONDS, f"took {elapsed:.1f} CPU s"
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "internal error" not in lines[0] and "Traceback" not in result.stderr
    assert str(named) in lines[0], lines[0]


def _run(
    run_cli: Callable[..., CliResult], tmp_path: Path, args: list[Any], named: Path | str
) -> CliResult:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    before = snapshot(tmp_path)
    started = cpu_seconds()
    result = run_cli(*args)
    _one_line_exit_2(result, started, named)
    outside = {p for p in snapshot(tmp_path) - before if not p.startswith("out")}
    assert outside == set(), outside
    return result


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("command", sorted(JSON_COMMANDS))
def test_hostile_json_is_one_line_exit_2(
    command: str,
    payload: str,
    world: World,
    tmp_path: Path,
    run_cli: Callable[..., CliResult],
) -> None:
    name, make = JSON_COMMANDS[command]
    hostile = tmp_path / "hostile" / name
    hostile.parent.mkdir()
    hostile.write_bytes(PAYLOADS[payload] + (b"\n" if name.endswith(".ndjson") else b""))
    _run(run_cli, tmp_path, make(world, hostile, tmp_path / "out"), hostile)


@pytest.mark.parametrize("command", sorted(JSON_COMMANDS))
def test_directory_in_place_of_a_json_file_is_one_line_exit_2(
    command: str, world: World, tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    name, make = JSON_COMMANDS[command]
    hostile = tmp_path / "hostile" / name
    hostile.mkdir(parents=True)
    _run(run_cli, tmp_path, make(world, hostile, tmp_path / "out"), hostile)


def test_hostile_seal_in_a_chain_is_one_line_exit_2(
    world: World, tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    """The seal files of a chain are JSON too: a hostile one is refused by every reader."""
    for payload in PAYLOADS.values():
        evidence = tmp_path / "evidence"
        shutil.rmtree(evidence, ignore_errors=True)
        shutil.copytree(world.inputs.evidence, evidence)
        seal = sorted(evidence.rglob("0000000002.seal.dsse.json"))[0]
        seal.write_bytes(payload)
        for args in (
            ["signals", "verify-chain", evidence, "--trust-root", world.keys.trust_root],
            ["signals", "status", evidence],
            ["observations", "query", "--evidence", evidence],
            [
                "function-map", "verify", "--function-map", world.inputs.function_map,
                "--evidence", evidence,
            ],
        ):  # fmt: skip
            before = snapshot(tmp_path)
            started = cpu_seconds()
            result = run_cli(*args)
            assert cpu_seconds() - started < SECONDS
            assert result.exit_code in (1, 2), (args, result.exit_code, result.stderr)
            assert "internal error" not in result.stderr, (args, result.stderr)
            assert len(result.stderr.strip().splitlines()) <= 1, result.stderr
            assert seal.name in result.stdout + result.stderr, (args, result.stdout)
            assert snapshot(tmp_path) == before


# --- a time that overflows when moved to UTC ---------------------------------------------------


def _record_with(world: World, field: str) -> bytes:
    record = dict(world.inputs.records[0])
    record[field] = OVERFLOW_TIME
    return json.dumps(record).encode() + b"\n"


@pytest.mark.parametrize(
    "command",
    sorted(c for c, (name, _) in JSON_COMMANDS.items() if name.endswith(".ndjson")),
)
@pytest.mark.parametrize("field", ["observed_at", "first_observed_at", "last_observed_at"])
def test_timestamp_overflowing_utc_in_a_record(
    command: str, field: str, world: World, tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    name, make = JSON_COMMANDS[command]
    hostile = tmp_path / "hostile" / name
    hostile.parent.mkdir()
    hostile.write_bytes(_record_with(world, field))
    result = _run(run_cli, tmp_path, make(world, hostile, tmp_path / "out"), hostile)
    assert field in result.stderr


TIME_OPTIONS: dict[str, Args] = {
    "function-map-verify --from": lambda w, h, o: [
        "function-map", "verify", "--function-map", w.inputs.function_map,
        "--observations", w.observations, "--from", OVERFLOW_TIME,
    ],
    "observations-query --to": lambda w, h, o: [
        "observations", "query", "--observations", w.observations, "--to", OVERFLOW_TIME,
    ],
    "observations-timeline --from": lambda w, h, o: [
        "observations", "timeline", "--observations", w.observations, "--from", OVERFLOW_TIME,
    ],
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(TIME_OPTIONS))
def test_timestamp_overflowing_utc_in_an_option(
    command: str, world: World, tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    option = command.split()[-1]
    _run(run_cli, tmp_path, TIME_OPTIONS[command](world, tmp_path, tmp_path / "out"), option)


def test_timestamp_overflowing_utc_in_a_trust_root(
    world: World, tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    root = json.loads(world.keys.trust_root.read_text())
    root["expires"] = OVERFLOW_TIME
    hostile = tmp_path / "root.json"
    hostile.write_text(json.dumps(root))
    for args in (
        ["trust-root", "show", hostile],
        ["attest", "verify", world.envelope, "--trust-root", hostile, "--role", "function-map"],
    ):
        _run(run_cli, tmp_path, list(args), hostile)


# --- unreadable files ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_unreadable_seal_in_verify_chain(
    kind: str, world: World, tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    evidence = tmp_path / "evidence"
    shutil.copytree(world.inputs.evidence, evidence)
    seal = sorted(evidence.rglob("0000000002.seal.dsse.json"))[0]
    seal.unlink()
    if kind == "directory":
        seal.mkdir()
    else:
        os.mkfifo(seal)  # a plain open() would block here for ever
    for args in (
        ["signals", "verify-chain", evidence, "--trust-root", world.keys.trust_root],
        ["observations", "query", "--evidence", evidence],
    ):
        _run(run_cli, tmp_path, list(args), seal)


def test_unreadable_chunk_in_verify_chain_is_a_finding(
    world: World, tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    evidence = tmp_path / "evidence"
    shutil.copytree(world.inputs.evidence, evidence)
    chunk = sorted(evidence.rglob("0000000002.ndjson.zst"))[0]
    chunk.unlink()
    os.mkfifo(chunk)
    started = cpu_seconds()
    result = run_cli("signals", "verify-chain", evidence, "--trust-root", world.keys.trust_root)
    assert cpu_seconds() - started < SECONDS
    assert result.exit_code == 1, result.stderr
    assert "expected a regular file, found a FIFO" in result.stdout + result.stderr


def test_join_output_naming_a_directory(
    world: World, tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    from stella_bundle.bundle.media import split_bundle

    bundle = tmp_path / "b.stella.bundle.tgz"
    bundle.write_bytes(os.urandom(3000))
    (tmp_path / "parts").mkdir()
    split_bundle(bundle, 1000, output_dir=tmp_path / "parts")
    target = tmp_path / "out" / "existing"
    target.mkdir(parents=True)
    _run(
        run_cli,
        tmp_path,
        [
            "bundle",
            "join",
            tmp_path / "parts" / "b.stella.bundle.tgz.parts.json",
            "--output",
            target,
        ],
        target,
    )
    assert list(target.iterdir()) == []


def _without_dac(*args: Any, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI as root without the capabilities that let root read any file."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE")
    drop = "-dac_override,-dac_read_search"
    command = [
        "setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}",
        sys.executable, "-m", "stella_bundle", *[str(a) for a in args],
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


PERMISSION_COMMANDS: dict[str, Args] = {
    "schema-validate": lambda w, h, o: ["schema", "validate", h],
    "function-map-verify(map)": lambda w, h, o: [
        "function-map", "verify", "--function-map", h, "--observations", w.observations,
    ],
    "function-map-verify(observations)": lambda w, h, o: [
        "function-map", "verify", "--function-map", w.inputs.function_map,
        "--observations", h,
    ],
    "observations-import": lambda w, h, o: [
        "observations", "import", h, "--target", o / "evidence",
        "--key", w.keys.private("collector"),
    ],
    "trust-root-show": lambda w, h, o: ["trust-root", "show", h],
    "bundle-verify": lambda w, h, o: [
        "bundle", "verify", h, "--trust-root", w.keys.trust_root, "--output-dir", o,
    ],
}  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="checks root without CAP_DAC_OVERRIDE")
@pytest.mark.parametrize("command", sorted(PERMISSION_COMMANDS))
def test_permission_denied_is_one_line(command: str, world: World, tmp_path: Path) -> None:
    hostile = tmp_path / "unreadable.json"
    hostile.write_bytes(world.observations.read_bytes())
    hostile.chmod(0)
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    started = cpu_seconds()
    completed = _without_dac(*PERMISSION_COMMANDS[command](world, hostile, out), cwd=tmp_path)
    result = CliResult(completed.returncode, completed.stdout, completed.stderr)
    _one_line_exit_2(result, started, hostile)
    assert "not readable" in result.stderr or "Permission denied" in result.stderr
    assert "Usage:" not in result.stderr
    assert {p for p in snapshot(tmp_path) - before if not p.startswith("out")} == set()


# --- YAML configuration (stellaops.yaml), read by one function for every command ---------------

YAML_PAYLOADS = {
    "big-int": b"signals:\n  max_records: 1" + b"0" * 5000 + b"\n",
    "deep": b"signals: " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
}

CONFIG_COMMANDS: dict[str, Args] = {
    "observations-import": lambda w, h, o: [
        "observations", "import", w.observations, "--config", h, "--target", o / "evidence",
        "--key", w.keys.private("collector"),
    ],
    "tetragon-ingest": lambda w, h, o: [
        "tetragon", "ingest", w.observations, "--function-map", w.inputs.function_map,
        "--config", h, "--target", o / "evidence", "--key", w.keys.private("collector"),
    ],
    "observations-ingest": lambda w, h, o: [
        "observations", "ingest", w.observations, "--config", h,
        "--store", f"sqlite:///{o / 'store.sqlite'}",
    ],
}  # fmt: skip


@pytest.mark.parametrize("payload", sorted(YAML_PAYLOADS))
@pytest.mark.parametrize("command", sorted(CONFIG_COMMANDS))
def test_hostile_yaml_config_is_one_line_exit_2(
    command: str, payload: str, world: World, tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    hostile = tmp_path / "hostile" / "stellaops.yaml"
    hostile.parent.mkdir()
    hostile.write_bytes(YAML_PAYLOADS[payload])
    result = _run(
        run_cli, tmp_path, CONFIG_COMMANDS[command](world, hostile, tmp_path / "out"), hostile
    )
    assert "malformed YAML" in result.stderr


# --- an output path naming an existing directory -----------------------------------------------

OUTPUT_COMMANDS: dict[str, Args] = {
    "attest-sign": lambda w, h, o: [
        "attest", "sign", "--input", w.inputs.function_map, "--predicate-type", "https://example.com/p/v1",
        "--key", w.keys.private("builder"), "--output", o,
    ],
    "function-map-generate": lambda w, h, o: [
        "function-map", "generate", "--sbom", w.inputs.directory / "app.cdx.json",
        "--service", "s", "--output", o,
    ],
    "function-map-verify": lambda w, h, o: [
        "function-map", "verify", "--function-map", w.inputs.function_map,
        "--observations", w.observations, "--output", o,
    ],
    "tetragon-policy": lambda w, h, o: [
        "tetragon", "policy", "--function-map", w.inputs.function_map, "--output", o,
    ],
    "bundle-build": lambda w, h, o: [
        "bundle", "build", "--function-map", w.inputs.function_map,
        "--evidence", w.inputs.evidence, "--key", w.keys.private("builder"), "--output", o,
    ],
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(OUTPUT_COMMANDS))
def test_output_naming_a_directory_is_one_line_exit_2(
    command: str, world: World, tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    target = tmp_path / "out" / "existing"
    target.mkdir(parents=True)
    _run(run_cli, tmp_path, OUTPUT_COMMANDS[command](world, tmp_path, target), target)
    assert list(target.iterdir()) == []


def test_the_cli_net_maps_only_input_limits_to_exit_2() -> None:
    """Under every parser's own handling, the CLI's last net: the interpreter limits only
    hostile input reaches, and unusable paths, are exit 2; anything else stays our bug."""
    import errno

    from stella_bundle.cli import _input_limit

    try:
        int("1" * 5000)
    except ValueError as exc:
        assert "too long" in (_input_limit(exc) or "")
    assert "nested too deeply" in (_input_limit(RecursionError("deep")) or "")
    denied = PermissionError(errno.EACCES, "Permission denied", "/x/y.json")
    assert _input_limit(denied) == "/x/y.json: Permission denied"
    assert _input_limit(ValueError("something else")) is None
    assert _input_limit(OSError(errno.EIO, "I/O error", "/x")) is None
    assert _input_limit(KeyError("k")) is None


# --- a lone surrogate escape: not Unicode text, refused alike by every reader -------------------


@pytest.mark.parametrize(
    "command",
    sorted(c for c, (name, _) in JSON_COMMANDS.items() if name.endswith(".ndjson")),
)
@pytest.mark.parametrize("escape", ["\\ud800", "\\uDFFF"])
def test_lone_surrogate_in_a_record_is_refused_by_every_reader(
    command: str, escape: str, world: World, tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    """orjson and msgspec (the fast paths) refuse a lone surrogate; `json` accepts it, so the
    validators disagreed (found by the fuzz run). Now every record reader refuses it."""
    name, make = JSON_COMMANDS[command]
    hostile = tmp_path / "hostile" / name
    hostile.parent.mkdir()
    good = json.dumps(dict(world.inputs.records[0]))
    bad = good.replace('"function_name": "', '"function_name": "' + escape, 1)
    assert bad != good
    hostile.write_text(bad + "\n")
    result = _run(run_cli, tmp_path, make(world, hostile, tmp_path / "out"), hostile)
    assert "surrogate" in result.stderr or "UTF-8" in result.stderr, result.stderr


def test_a_surrogate_pair_is_text_and_accepted() -> None:
    from stella_bundle.jsonio import parse_json, parse_json_line

    assert parse_json_line(b'{"f": "\\ud83d\\ude00"}', "x", 1) == {"f": "\N{GRINNING FACE}"}
    assert parse_json('{"f": "\\uD83D\\uDE00"}', "x") == {"f": "\N{GRINNING FACE}"}


@pytest.mark.parametrize("source", ["/dev/zero", "sparse"])
@pytest.mark.parametrize("option", ["--trust-root", "--sbom"])
def test_a_document_past_the_memory_limit_is_one_line_exit_2(
    source: str, option: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: Any
) -> None:
    # `--trust-root /dev/zero` (or a file of gigabytes) was read whole: MemoryError, "internal
    # error", exit 3. Documents are now bounded (jsonio.MAX_DOCUMENT_BYTES, 512 MiB; lowered
    # here so that the test reads 1 MiB, not 512).
    from stella_bundle import jsonio

    monkeypatch.setattr(jsonio, "MAX_DOCUMENT_BYTES", 1 << 20)
    if source == "sparse":
        path = tmp_path / "big.json"
        with open(path, "wb") as handle:
            handle.truncate((1 << 20) + 1)
        source = str(path)
    if option == "--trust-root":
        args = ["bundle", "verify", tmp_path / "none.stella.bundle.tgz", "--trust-root", source]
    else:
        args = ["function-map", "generate", "--sbom", source, "--service", "s"]
        args += ["--output", tmp_path / "fm.json"]
    result = (
        run_cli(*args, "--output-dir", tmp_path / "out")
        if option == "--trust-root"
        else run_cli(*args)
    )
    assert result.exit_code == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert source in line and "over the limit of a document read into memory" in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "fm.json").exists()
