"""Archive order never changes the verdict: anything but the builder's order is refused.

The hostile archives are re-packings of a valid bundle built here (every member's bytes and
the signed manifest unchanged): a chunk+seal moved before the function map, a chain's first
chunk moved after its seal or to the end, a seal moved before its chunk, a whole chain moved
after the observations. Each is refused as a hostile archive (exit 2), in one line naming
the out-of-order member, with nothing written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.bundle.layout import CHUNK_RE, FUNCTION_MAP_RE, OBSERVATIONS_RE, SEAL_RE
from tests.bundle.bundle_helpers import (
    build_reproducible,
    make_inputs,
    read_members,
    snapshot,
    write_members,
)
from tests.conftest import CliResult

Members = list[tuple[str, bytes]]


# Each verification inline and with worker processes (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("chunk_workers")


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory, test_keys: Any) -> Members:

    inputs = make_inputs(tmp_path_factory.mktemp("order-inputs"), test_keys)
    output = tmp_path_factory.mktemp("order-built") / "demo.stella.bundle.tgz"
    build_reproducible(inputs.function_map, inputs.evidence, test_keys.signer("builder"), output)
    return read_members(output)


def _index(members: Members, pattern: Any, nth: int = 0) -> int:
    return [i for i, (name, _) in enumerate(members) if pattern.match(name)][nth]


def _move(members: Members, source: int, target: int) -> Members:
    moved = list(members)
    entry = moved.pop(source)
    moved.insert(target, entry)
    return moved


def chunk_and_seal_before_the_map(members: Members) -> tuple[Members, str]:
    chunk, seal = _index(members, CHUNK_RE, 1), _index(members, SEAL_RE, 1)
    pair = [members[chunk], members[seal]]
    rest = [m for i, m in enumerate(members) if i not in (chunk, seal)]
    at = _index(rest, FUNCTION_MAP_RE)
    return rest[:at] + pair + rest[at:], pair[0][0]


def first_chunk_after_its_seal(members: Members) -> tuple[Members, str]:
    chunk = _index(members, CHUNK_RE)
    moved = _move(members, chunk, chunk + 1)
    return moved, members[chunk + 1][0]


def first_chunk_to_the_end_of_its_chain(members: Members) -> tuple[Members, str]:
    chunk = _index(members, CHUNK_RE)
    last = max(i for i, (name, _) in enumerate(members) if SEAL_RE.match(name))
    return _move(members, chunk, last), members[chunk + 1][0]


def seal_moved_before_the_chain(members: Members) -> tuple[Members, str]:
    seal = _index(members, SEAL_RE, 2)
    first_chunk = _index(members, CHUNK_RE)
    return _move(members, seal, first_chunk), members[first_chunk][0]


def chain_moved_after_the_observations(members: Members) -> tuple[Members, str]:
    chain = [m for m in members if m[0].startswith("evidence/")]
    rest = [m for m in members if not m[0].startswith("evidence/")]
    assert OBSERVATIONS_RE.match(rest[-1][0]) or rest[-1][0].startswith("verification/")
    return rest + chain, chain[0][0]


CASES: dict[str, Callable[[Members], tuple[Members, str]]] = {
    "chunk-and-seal-before-the-map": chunk_and_seal_before_the_map,
    "first-chunk-after-its-seal": first_chunk_after_its_seal,
    "first-chunk-to-the-end": first_chunk_to_the_end_of_its_chain,
    "seal-before-the-chain": seal_moved_before_the_chain,
    "chain-after-the-observations": chain_moved_after_the_observations,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_reordered_archive_is_refused(
    case: str,
    members: Members,
    tmp_path: Path,
    test_keys: Any,
    run_cli: Callable[..., CliResult],
) -> None:
    reordered, _ = CASES[case](members)
    assert sorted(reordered) == sorted(members), "only the order may differ"
    assert reordered != members
    bundle = write_members(tmp_path / f"{case}.stella.bundle.tgz", reordered)
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    result = run_cli(
        "bundle", "verify", bundle, "--trust-root", test_keys.trust_root, "--output-dir", out
    )
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "out of the canonical order" in lines[0]
    # The first entry met out of order is named (whichever member the re-packing displaced).
    names = [name for name, _ in reordered]
    position = next(
        i for i in range(3, len(names)) if _sort_key(names[i]) <= _sort_key(names[i - 1])
    )
    assert repr(names[position]) in lines[0], (names[position], lines[0])
    assert snapshot(tmp_path) - before == set(), "a refused archive writes nothing"


def _sort_key(name: str) -> tuple[int, bytes]:
    from stella_bundle.bundle.layout import entry_order

    return entry_order(name)


def test_builder_order_still_passes(
    members: Members, tmp_path: Path, test_keys: Any, run_cli: Callable[..., CliResult]
) -> None:
    bundle = write_members(tmp_path / "same.stella.bundle.tgz", members)
    out = tmp_path / "out"
    result = run_cli(
        "bundle", "verify", bundle, "--trust-root", test_keys.trust_root, "--output-dir", out
    )
    assert result.exit_code == 0, result.stderr
    assert (out / "verification-report.json").exists()
