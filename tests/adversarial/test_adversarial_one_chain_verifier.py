"""The evidence-chain rules exist once: `signals verify-chain` and `bundle verify` agree.

The same chain (valid, and each tampering class: broken link, gap, reordered, tampered chunk,
pruned with a valid prune record, pruned with a prune record signed by an untrusted key,
pruned without a prune record) is given to `signals verify-chain` as a directory and to
`bundle verify` as members streamed out of an archive built from it. Both feed the one
`evidence.chain.ChainStateMachine`, so the findings are the same list, and the verdict (pass or
the evidence-chains step failing) is the same. The prune-acceptance branch (a signed prune
record explains the missing start, the chain passes) runs through both entry points.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from stella_bundle.canonical import canonical_bytes
from stella_bundle.evidence.layout import PRUNE_RECORD_NAME, chunk_name, seal_name
from stella_bundle.evidence.prune import prune_chain
from stella_bundle.timeutil import format_timestamp, parse_timestamp
from tests.adversarial.chain_surgery import Predicate, read_records, rewrite_chain
from tests.adversarial.test_adversarial_time import _build
from tests.bundle.bundle_helpers import BundleInputs, make_inputs
from tests.conftest import CliResult

# Each verification inline and with worker processes (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("chunk_workers")


def _spread_seal_times(chain: Path, keys: Any) -> None:
    """Seals a minute apart (the writer seals within milliseconds), so pruning by age can take
    exactly the first two."""

    def edit(seals: dict[int, Predicate]) -> None:
        last = parse_timestamp(seals[max(seals)]["sealed_at"])
        for sequence, seal in seals.items():
            seal["sealed_at"] = format_timestamp(last - dt.timedelta(minutes=max(seals) - sequence))

    rewrite_chain(chain, keys.signer("collector"), seals=edit)


def valid(chain: Path, keys: Any) -> None:
    """Nothing changed."""


def broken_link(chain: Path, keys: Any) -> None:
    def edit(seals: dict[int, Predicate]) -> None:
        seals[3]["previous"]["sha256"] = "0" * 64

    rewrite_chain(chain, keys.signer("collector"), seals=edit, relink=False)


def gap(chain: Path, keys: Any) -> None:
    (chain / seal_name(3)).unlink()
    (chain / chunk_name(3)).unlink()


def reordered(chain: Path, keys: Any) -> None:
    for name in (seal_name, chunk_name):
        two, three = chain / name(2), chain / name(3)
        data = two.read_bytes()
        two.write_bytes(three.read_bytes())
        three.write_bytes(data)


def tampered_chunk(chain: Path, keys: Any) -> None:
    records = read_records(chain, 2)
    records[4]["function_name"] = records[4]["function_name"] + "_forged"
    content = b"".join(canonical_bytes(r) + b"\n" for r in records)
    (chain / chunk_name(2)).write_bytes(zstandard.ZstdCompressor().compress(content))


def pruned_with_prune_record(chain: Path, keys: Any) -> None:
    _prune_by(chain, keys, keys.signer("collector"))


def pruned_by_an_untrusted_key(chain: Path, keys: Any) -> None:
    _prune_by(chain, keys, keys.signer("builder"))


def pruned_without_prune_record(chain: Path, keys: Any) -> None:
    for sequence in (1, 2):
        (chain / seal_name(sequence)).unlink()
        (chain / chunk_name(sequence)).unlink()


def _prune_by(chain: Path, keys: Any, signer: Any) -> None:
    _spread_seal_times(chain, keys)
    from stella_bundle.evidence.seal import parse_seal

    second = parse_seal((chain / seal_name(2)).read_bytes()).predicate.sealed_at
    result = prune_chain(
        chain,
        0,
        signer,
        now=parse_timestamp(second) + dt.timedelta(seconds=30),
    )
    assert result.removed_sequences == [1, 2], result
    assert (chain / PRUNE_RECORD_NAME).exists()


# name: (make the chain, error finding codes expected (None: the chain passes))
CASES: dict[str, tuple[Callable[[Path, Any], None], set[str] | None]] = {
    "valid": (valid, None),
    "broken-link": (broken_link, {"broken_link"}),
    "gap": (gap, {"gap"}),
    # Seal 4 names the seal that was at 3: moving it breaks that link too.
    "reordered": (reordered, {"reordered", "broken_link"}),
    "tampered-chunk": (tampered_chunk, {"tampered_chunk"}),
    "pruned-with-prune-record": (pruned_with_prune_record, None),
    "pruned-by-untrusted-key": (pruned_by_an_untrusted_key, {"prune_rejected", "gap"}),
    "pruned-without-prune-record": (pruned_without_prune_record, {"gap"}),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, test_keys: Any) -> BundleInputs:
    return make_inputs(tmp_path_factory.mktemp("one-verifier-inputs"), test_keys)


@pytest.mark.parametrize("case", sorted(CASES))
def test_verify_chain_and_bundle_verify_give_the_same_findings(
    case: str,
    pristine: BundleInputs,
    tmp_path: Path,
    test_keys: Any,
    run_cli: Callable[..., CliResult],
) -> None:
    make, errors = CASES[case]
    inputs = tmp_path / "inputs"
    shutil.copytree(pristine.directory, inputs)
    chain = inputs / "evidence" / "host-a"
    make(chain, test_keys)

    chain_result = run_cli(
        "signals", "verify-chain", chain, "--trust-root", test_keys.trust_root, "--format", "json"
    )
    by_directory = json.loads(chain_result.stdout)["chains"][0]["findings"]

    bundle = tmp_path / "chain.stella.bundle.tgz"
    _build(inputs, pristine, bundle, test_keys)
    out = tmp_path / "out"
    result = run_cli(
        "bundle", "verify", bundle, "--trust-root", test_keys.trust_root, "--output-dir", out
    )
    report = json.loads((out / "verification-report.json").read_text())["predicate"]
    by_archive = report["evidence"][0]["findings"]

    assert by_archive == by_directory
    error_codes = {f["code"] for f in by_directory if f["severity"] == "error"}
    step = next(s for s in report["steps"] if s["name"] == "evidence-chains")
    if errors is None:
        assert not error_codes, by_directory
        assert chain_result.exit_code == 0, chain_result.stdout
        assert step["status"] == "passed", step
        assert result.exit_code == 0, result.stderr
    else:
        assert error_codes == errors, by_directory
        assert chain_result.exit_code == 1
        assert step["status"] == "failed", step
        assert result.exit_code == 1, result.stderr
        assert "step 'evidence-chains'" in result.stderr
    if case == "pruned-with-prune-record":
        assert "pruned" in {f["code"] for f in by_directory}, by_directory


def test_a_chain_directory_that_is_not_a_chain_id_still_gives_a_report(
    pristine: BundleInputs, tmp_path: Path, test_keys: Any, run_cli: Callable[..., CliResult]
) -> None:
    """An insider's archive (manifest re-signed) naming a chain `host a!`: refused, reported."""
    from tests.bundle.bundle_helpers import read_members, resign_manifest, write_members

    valid = tmp_path / "valid.stella.bundle.tgz"
    _build(pristine.directory, pristine, valid, test_keys)
    renamed = [
        (name.replace("evidence/host-a/", "evidence/host a!/"), data)
        for name, data in read_members(valid)
    ]
    bundle = write_members(
        tmp_path / "renamed.stella.bundle.tgz",
        resign_manifest(renamed, test_keys.signer("builder")),
    )
    out = tmp_path / "out"
    result = run_cli(
        "bundle", "verify", bundle, "--trust-root", test_keys.trust_root, "--output-dir", out
    )
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "step 'file-list'" in lines[0], result.stderr
    assert "invalid chain id 'host a!'" in lines[0], lines[0]
    assert result.exit_code in (1, 2)
    report = json.loads((out / "verification-report.json").read_text())["predicate"]
    assert report["verification_result"] == "FAILED"
