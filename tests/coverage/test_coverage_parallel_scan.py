"""Differential: a file scanned in byte ranges by worker processes gives the report (or the
error, naming the same file and line) of one scan in this process, for generated files mixing
canonical, non-canonical, aggregated, out-of-window, out-of-scope, duplicate-key and bad lines.

Blocks are made small so that ranges and blocks cut the file at many different lines, and
each mode sends different mixes of lines to the fast and the line-by-line paths."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from securesystemslib.signer import CryptoSigner

from stella_bundle.attest.dsse import envelope_bytes, sign_statement
from stella_bundle.attest.statement import FUNCTION_MAP_PREDICATE, make_statement
from stella_bundle.canonical import canonical_bytes
from stella_bundle.coverage import VerifyOptions, verify_files, verify_map_files
from stella_bundle.coverage import engine as engine_module
from stella_bundle.coverage import scan as scan_module
from stella_bundle.errors import StellaError
from stella_bundle.formats.function_map import FunctionMap
from stella_bundle.formats.scope import Scope
from stella_bundle.functionmap.load import load_function_map
from tests.conftest import scaled_examples
from tests.functionmap.functionmap_helpers import make_map, write_debian_sbom

HOT = ["openssl/SSL_read", "openssl/SSL_write", "net/connect"]
STRAY = ["sha256:" + digit * 64 for digit in "ab"]
PROBES = ["uprobe", "uretprobe", "kprobe", "tracepoint", "unknown"]
NGINX = {"executable": "/usr/sbin/nginx"}
WINDOW = VerifyOptions(
    window_from=dt.datetime(2026, 1, 23, 0, 20, tzinfo=dt.UTC),
    window_to=dt.datetime(2026, 1, 23, 0, 40, tzinfo=dt.UTC),
)


@pytest.fixture(scope="module")
def maps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FunctionMap]:
    sbom = write_debian_sbom(tmp_path_factory.mktemp("sbom") / "debian.cdx.json")
    plain = make_map(sbom, hot_functions=HOT)
    return {"plain": plain, "scoped": dataclasses.replace(plain, scope=Scope(**NGINX))}


def _stamp(minute: int, micro: int) -> str:
    return f"2026-01-23T00:{minute:02d}:{minute % 60:02d}.{micro:06d}Z"


@st.composite
def lines(draw: st.DrawFn, nodes: list[tuple[str, str]]) -> bytes:
    """One NDJSON line (with its newline) of a kind the scan paths treat differently."""
    kind = draw(
        st.sampled_from(
            ["plain"] * 5 + ["stray"] * 3 + ["spaced", "aggregated", "scoped", "duplicate", "blank"]
        )
    )
    if kind == "stray":
        node_hash = draw(st.sampled_from(STRAY))
        name = draw(st.sampled_from(["x", "y\u00e9", 'quote"d']))
    else:
        node_hash, name = draw(st.sampled_from(nodes))
    minute = draw(st.integers(0, 59))
    record: dict[str, Any] = {
        "node_hash": node_hash,
        "function_name": name,
        "observed_at": _stamp(minute, draw(st.integers(0, 999_999))),
        "probe_type": draw(st.sampled_from(PROBES)),
    }
    if kind == "aggregated":
        record["count"] = draw(st.integers(1, 5))
        record["first_observed_at"] = _stamp(max(0, minute - draw(st.integers(0, 30))), 0)
        record["last_observed_at"] = record["observed_at"]
    if kind == "scoped" or draw(st.booleans()):
        context = draw(st.sampled_from([NGINX, {"executable": "/usr/bin/curl"}]))
        record["details"] = {"scope": context}
    if kind == "spaced":
        return json.dumps(record, indent=None).encode() + b"\n"  # ", " and ": ": not canonical
    if kind == "duplicate":
        text = canonical_bytes(record).decode()
        return ('{"probe_type":"kprobe",' + text[1:]).encode() + b"\n"
    if kind == "blank":
        return b"\n"
    return canonical_bytes(record) + b"\n"


BAD = [b"{oops\n", b'{"node_hash":1}\n', b"\xff\n"]


def _outcome(fmap: FunctionMap, path: Path, options: VerifyOptions) -> Any:
    try:
        return verify_files(fmap, [path], options).to_dict()
    except StellaError as exc:
        return type(exc).__name__, str(exc)


@settings(
    max_examples=scaled_examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_workers_give_the_report_or_error_of_one_scan(
    data: st.DataObject, maps: dict[str, FunctionMap], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(scan_module, "_BLOCK", data.draw(st.sampled_from([64, 300, 2000])))
    fmap = maps[data.draw(st.sampled_from(["plain", "scoped"]))]
    nodes = sorted({(n.node_hash, n.symbol) for p in fmap.expected_paths for n in p.nodes})
    good = data.draw(st.lists(lines(nodes), min_size=10, max_size=80))
    for _ in range(data.draw(st.integers(0, 2))):  # none in most files: reports are compared
        bad = data.draw(st.sampled_from([*BAD, good[0].replace(b"2026-01-23T", b"2026-02-30T")]))
        good.insert(data.draw(st.integers(0, len(good))), bad)
    body = b"".join(good)
    if data.draw(st.booleans()):
        body = body.rstrip(b"\n")  # a last line without its newline
    options = VerifyOptions(
        window_from=WINDOW.window_from if data.draw(st.booleans()) else None,
        window_to=WINDOW.window_to if data.draw(st.booleans()) else None,
    )
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "observations.ndjson"
        path.write_bytes(body)
        inline = _outcome(fmap, path, dataclasses.replace(options, workers=1))
        for workers in (2, 3):
            assert _outcome(fmap, path, dataclasses.replace(options, workers=workers)) == inline
        # The map read while the workers scan (they learn its nodes only at the merge).
        map_file = _write_map(fmap, Path(directory), signed=data.draw(st.booleans()))
        assert _map_outcome(map_file, path, dataclasses.replace(options, workers=2)) == inline


def _write_map(fmap: FunctionMap, directory: Path, *, signed: bool) -> Path:
    statement = make_statement(
        [{"name": "sbom.cdx.json", "digest": {"sha256": "0" * 64}}],
        FUNCTION_MAP_PREDICATE,
        fmap.to_dict(),
    )
    if not signed:
        path = directory / "function-map.json"
        path.write_bytes(canonical_bytes(statement))
        return path
    path = directory / "function-map.dsse.json"
    signer = CryptoSigner(ed25519.Ed25519PrivateKey.generate())
    path.write_bytes(envelope_bytes(sign_statement(statement, [signer])))
    return path


def _map_outcome(map_file: Path, path: Path, options: VerifyOptions) -> Any:
    try:
        return verify_map_files(map_file, [path], options)[1].to_dict()
    except StellaError as exc:
        return type(exc).__name__, str(exc)


def test_map_read_during_the_scan_gives_its_own_error_first(
    maps: dict[str, FunctionMap], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A bad map is refused as by load_function_map, though the scan already started (and a
    bad line in the observations is not what is reported); a good one gives its own digest."""
    monkeypatch.setattr(engine_module, "PARALLEL_MIN_BYTES", 1)
    fmap = maps["scoped"]
    node = fmap.expected_paths[0].nodes[0]
    line = canonical_bytes(
        {
            "node_hash": node.node_hash,
            "function_name": node.symbol,
            "observed_at": "2026-01-23T00:30:00.000000Z",
        }
    )
    path = tmp_path / "obs.ndjson"
    path.write_bytes((line + b"\n") * 3000 + b"{oops\n")
    map_file = _write_map(fmap, tmp_path, signed=False)
    clean = tmp_path / "clean.ndjson"
    clean.write_bytes((line + b"\n") * 3000)
    loaded, result = verify_map_files(map_file, [clean], VerifyOptions(workers=2))
    assert loaded == load_function_map(map_file) and result.records["read"] == 3000
    with pytest.raises(StellaError, match=":3001: malformed NDJSON"):
        verify_map_files(map_file, [path], VerifyOptions(workers=2))
    broken = json.loads(map_file.read_bytes())
    broken["predicate"]["expected_paths"][0]["nodes"][0]["node_hash"] = "sha256:" + "0" * 64
    map_file.write_bytes(canonical_bytes(broken))
    with pytest.raises(StellaError) as caught:
        verify_map_files(map_file, [path], VerifyOptions(workers=2))
    assert caught.value.field is not None and "node_hash" in caught.value.field
    map_file.write_bytes(b'{"predicate": {"scope": 1}, "predicate": {}}')  # no hint either
    with pytest.raises(StellaError, match="appears twice"):
        verify_map_files(map_file, [path], VerifyOptions(workers=2))


def test_the_collector_is_paused_while_a_map_verifies_and_restored(
    maps: dict[str, FunctionMap], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fmap = maps["plain"]
    node = fmap.expected_paths[0].nodes[0]
    path = tmp_path / "obs.ndjson"
    path.write_bytes(
        canonical_bytes(
            {
                "node_hash": node.node_hash,
                "function_name": node.symbol,
                "observed_at": "2026-01-23T00:30:00.000000Z",
            }
        )
        + b"\n"
    )
    map_file = _write_map(fmap, tmp_path, signed=False)
    seen: list[bool] = []
    parse = engine_module.parse_function_map

    def parse_and_look(*args: Any) -> Any:
        seen.append(gc.isenabled())
        return parse(*args)

    monkeypatch.setattr(engine_module, "parse_function_map", parse_and_look)
    assert gc.isenabled()
    verify_map_files(map_file, [path], VerifyOptions(workers=1))
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        verify_map_files(map_file, [path], VerifyOptions(workers=1))
        assert not gc.isenabled()
    finally:
        gc.enable()


def _die(unit: Any) -> Any:
    import os

    os._exit(9)  # a worker killed mid-scan (the OOM killer, an operator's kill -9)


def test_a_worker_that_dies_is_an_internal_error_not_a_hang(
    maps: dict[str, FunctionMap], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from stella_bundle.errors import InternalError

    monkeypatch.setattr(engine_module, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(engine_module, "_scan_unit", _die)  # inherited by the forked workers
    fmap = maps["plain"]
    node = fmap.expected_paths[0].nodes[0]
    line = canonical_bytes(
        {
            "node_hash": node.node_hash,
            "function_name": node.symbol,
            "observed_at": "2026-01-23T00:30:00.000000Z",
        }
    )
    path = tmp_path / "obs.ndjson"
    path.write_bytes((line + b"\n") * 5000)
    with pytest.raises(InternalError, match="worker process died"):
        verify_files(fmap, [path], dataclasses.replace(WINDOW, workers=3))
