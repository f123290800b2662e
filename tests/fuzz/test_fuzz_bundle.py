"""Fuzzing the whole `bundle verify` pipeline with mutated, re-signed real bundles.

The seed is a real bundle built by the library. Mutations (bundle_mutations.py) alter its members
the way an insider holding the signing keys could (re-signing what they alter) or an outsider
could (without re-signing), and the pass then writes its report as `stella bundle verify` does.
Only the project's own errors may come out, and memory stays bounded.
"""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path

from bundle_mutations import RECIPES, BundleRecipe, mutate_bundle
from fuzz_support import (
    bounded_memory,
    call_allowing_own_errors,
    fuzz_settings,
    scratch_dir,
    seed_bundle,
    seed_keys,
)
from hypothesis import example, given
from rich.console import Console

from stella_bundle.bundle.inspect import inspect_bundle
from stella_bundle.bundle.reader import SafeTarReader
from stella_bundle.formats.trust_root import TrustRoot
from stella_bundle.report import report_renderable, write_reports
from stella_bundle.verify import verify_bundle


@functools.cache
def bundle_members() -> list[tuple[str, bytes]]:
    with SafeTarReader.open(seed_bundle().bundle) as reader:
        return [(member.name, stream.read_all(1 << 30)) for member, stream in reader]


@functools.cache
def trust_root() -> TrustRoot:
    return TrustRoot.load(seed_keys().trust_root)


def verify_and_report(bundle: Path, output: Path) -> int:
    """What `stella bundle verify` does: the pass, then the report files; return the exit code."""
    outcome = verify_bundle(bundle, trust_root())
    write_reports(outcome, output)
    # The table on screen and the one-line failure, as the command prints them.
    Console(file=io.StringIO(), width=120).print(report_renderable(outcome.report))
    failure = outcome.failure_line()
    assert failure is None or "\n" not in failure, failure
    return outcome.exit_code


def test_seed_bundle_verifies() -> None:
    directory = scratch_dir("verify-seed")
    bundle = directory / "seed.stella.bundle.tgz"
    bundle.write_bytes(mutate_bundle(bundle_members(), ([], True, True)))
    assert verify_and_report(bundle, directory / "report") == 0


@fuzz_settings(scale=0.25)
@given(recipe=RECIPES)
@example(recipe=([("json", 48, [("raw", 2920, 11)], "payload")], True, True))  # lone surrogate
@example(recipe=([("chunk", 0, [("raw", 0, 0)])], True, True))  # 4,301-digit integer
@example(recipe=([("json", 0, [("replace", 2, 5)], "payload")], True, True))  # predicate: 5
def test_bundle_verify_mutated_bundles(recipe: BundleRecipe) -> None:
    directory = scratch_dir("verify")
    bundle = directory / "fuzz.stella.bundle.tgz"
    bundle.write_bytes(mutate_bundle(bundle_members(), recipe))
    with bounded_memory():
        call_allowing_own_errors(lambda: verify_and_report(bundle, directory / "report"))
        # `stella bundle inspect` reads the same archive without verifying it.
        call_allowing_own_errors(lambda: json.dumps(inspect_bundle(bundle)))
