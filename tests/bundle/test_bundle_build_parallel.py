"""`bundle build` with its chunk checks in worker processes writes the bytes of the inline
build: the view is copied as the chunks hold it while workers check order and records, and
rewritten (sorted, or cut into clean lines) when they say it must be."""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from stella_bundle.bundle import build, observations_view
from stella_bundle.errors import StellaError
from stella_bundle.evidence.layout import PRUNE_RECORD_NAME
from tests.bundle.bundle_helpers import (
    build_reproducible,
    make_inputs,
    records_for,
    write_chain,
)


def _rewrite_chunk(chain: Path, sequence: int, edit: Callable[[bytes], bytes]) -> None:
    """Replace a chunk's content (the build does not check seals against chunks)."""
    path = chain / f"{sequence:010d}.ndjson.zst"
    content = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
    path.write_bytes(zstandard.ZstdCompressor().compress(edit(content)))


def _blank_lines(content: bytes) -> bytes:
    lines = content.split(b"\n")
    return b"\n".join([*lines[:3], b"", b"  ", *lines[3:]]).rstrip(b"\n")  # no final newline


def _swap_first_two(content: bytes) -> bytes:
    lines = content.splitlines()
    return b"\n".join([lines[1], lines[0], *lines[2:]]) + b"\n"


def _bad_record(content: bytes) -> bytes:
    lines = content.splitlines()
    record = json.loads(lines[7])
    record["pid"] = -1
    lines[7] = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
    return b"\n".join(lines) + b"\n"


CASES: dict[str, tuple[int, Callable[[Path], None]]] = {
    "one-chain-in-order": (1, lambda chain: None),
    "one-chain-blank-lines": (1, lambda chain: _rewrite_chunk(chain, 2, _blank_lines)),
    "one-chain-out-of-order": (1, lambda chain: _rewrite_chunk(chain, 3, _swap_first_two)),
    "two-chains": (2, lambda chain: None),
    "bad-record": (1, lambda chain: _rewrite_chunk(chain, 2, _bad_record)),
}


def _build(inputs: Any, test_keys: Any, output: Path) -> bytes | str:
    try:
        build_reproducible(
            inputs.function_map, inputs.evidence, test_keys.signer("builder"), output
        )
    except StellaError as exc:
        return f"{type(exc).__name__}: {exc.describe()}"
    return output.read_bytes()


@pytest.mark.parametrize("case", sorted(CASES))
def test_workers_build_the_inline_bytes(
    tmp_path: Path, test_keys: Any, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: the build never starts workers here")
    chains, edit = CASES[case]
    inputs = make_inputs(tmp_path / "in", test_keys)
    shutil.rmtree(inputs.evidence)
    records = records_for(inputs.nodes, 900)
    collector = test_keys.signer("collector")
    for index in range(chains):
        write_chain(inputs.evidence, f"host-{index}", collector, records[index::chains], 200)
    edit(inputs.evidence / "host-0")
    built = {}
    for mode, least in (("inline", 1 << 62), ("workers", 0)):
        monkeypatch.setattr(observations_view, "PARALLEL_MIN_BYTES", least)
        (tmp_path / mode).mkdir()
        built[mode] = _build(inputs, test_keys, tmp_path / mode / "b.stella.bundle.tgz")
    assert built["workers"] == built["inline"]
    if case == "bad-record":
        assert built["inline"] == (
            f"ObservationError: {inputs.evidence}/host-0/0000000002.ndjson.zst:8: field 'pid': "
            "expected a non-negative integer (at most 2**53 - 1)"
        )
    else:
        assert isinstance(built["inline"], bytes)


def test_a_chain_without_chunks_builds_an_empty_view(tmp_path: Path, test_keys: Any) -> None:
    """One chain whose chunks were all pruned (its prune record alone is left): its view,
    streamed from no chunks (no file written), is empty."""
    inputs = make_inputs(tmp_path / "in", test_keys)
    shutil.rmtree(inputs.evidence)
    (inputs.evidence / "host-0").mkdir(parents=True)
    (inputs.evidence / "host-0" / PRUNE_RECORD_NAME).write_text("{}")
    out = _build(inputs, test_keys, tmp_path / "empty.stella.bundle.tgz")
    assert isinstance(out, bytes), out
    stats = observations_view.write_merged_view([[]], tmp_path / "view.ndjson", tmp_path)
    assert (stats.records, stats.size, stats.streamed, stats.crc) == (0, 0, True, 0)
    assert not (tmp_path / "view.ndjson").exists()
    assert stats.deflated is not None
    assert zlib.decompressobj(-zlib.MAX_WBITS).decompress(stats.deflated.read_bytes()) == b""


def test_a_chunk_changed_after_the_view_was_hashed_is_refused(
    tmp_path: Path, test_keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The streamed view is read from the chunks once (hashed and deflated for the archive);
    the chunks' own entries are hashed after it: a chunk file that changes in between is
    refused, not archived beside a view of its old bytes, and nothing is written."""
    inputs = make_inputs(tmp_path / "in", test_keys)
    shutil.rmtree(inputs.evidence)
    chain = inputs.evidence / "host-0"
    write_chain(
        inputs.evidence, "host-0", test_keys.signer("collector"), records_for(inputs.nodes, 90), 30
    )
    hash_source = build._hash_source
    swapped: list[bool] = []

    def swap_then_hash(source: Any) -> Any:
        if not swapped:  # the view has been read: the first file is hashed for the manifest
            swapped.append(True)
            chunk = chain / "0000000002.ndjson.zst"  # one byte changed, the size kept
            data = chunk.read_bytes()
            chunk.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
        return hash_source(source)

    monkeypatch.setattr(build, "_hash_source", swap_then_hash)
    output = tmp_path / "b.stella.bundle.tgz"
    result = _build(inputs, test_keys, output)
    assert result == (
        f"InputError: {chain}/0000000002.ndjson.zst: file changed while the bundle was written"
    )
    assert not output.exists()
