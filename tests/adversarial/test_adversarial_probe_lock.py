"""One definition of `probes/probes.lock.json`: what `bundle verify` accepts of a bundle's lock
is what the airgap loader (`collector.lockfile.load_lock`) accepts.

Before, the verifier read the lock with a loose reader of its own (any entry with a string
`name` and `sha256`): a bundle whose lock lacked its `format`, sizes or programs, or named one
object twice with two digests, verified PASSED, and then the loader on the production host
refused the same file (or, for the twice-named object, which entry counts was a reader's
accident). Now both use `parse_lock`, which also refuses a name listed twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.collector.lockfile import PACKAGE_BPF_DIR, load_lock, parse_lock
from stella_bundle.errors import MalformedDocumentError
from tests.bundle.bundle_helpers import (
    SOURCE_DATE_EPOCH,
    BundleInputs,
    read_members,
    resign_manifest,
    write_members,
)

LOCK = "probes/probes.lock.json"


@pytest.fixture(scope="module")
def probe_bundle(
    tmp_path_factory: pytest.TempPathFactory, bundle_inputs: BundleInputs, test_keys: Any
) -> list[tuple[str, bytes]]:
    """The members of a bundle built with the package's probe objects and their lock."""
    from stella_bundle.bundle.build import build_bundle

    output = tmp_path_factory.mktemp("probes") / "p.stella.bundle.tgz"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        build_bundle(
            function_maps=[bundle_inputs.function_map],
            evidence=[bundle_inputs.evidence],
            signer=test_keys.signer("builder"),
            output=output,
            probes=PACKAGE_BPF_DIR,
        )
    return read_members(output)


def _edit_drop_format(lock: dict[str, Any]) -> None:
    del lock["format"]


def _edit_twice(lock: dict[str, Any]) -> None:
    lock["objects"].append(dict(lock["objects"][0], sha256="0" * 64))


def _edit_no_programs(lock: dict[str, Any]) -> None:
    del lock["objects"][0]["programs"]


EDITS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "no format": (_edit_drop_format, "format"),
    "object named twice": (_edit_twice, "objects[8]"),
    "object without programs": (_edit_no_programs, "objects[0]"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_verify_and_the_loader_refuse_the_same_lock(
    edit: str,
    tmp_path: Path,
    probe_bundle: list[tuple[str, bytes]],
    test_keys: Any,
    run_cli: Any,
) -> None:
    change, field = EDITS[edit]
    members = probe_bundle
    lock = json.loads(dict(members)[LOCK])
    change(lock)
    if edit == "object named twice":
        field = f"objects[{len(lock['objects']) - 1}]"
    data = json.dumps(lock).encode()
    # The loader's verdict on these bytes.
    (tmp_path / "probes.lock.json").write_bytes(data)
    with pytest.raises(MalformedDocumentError) as loader:
        load_lock(tmp_path / "probes.lock.json")
    assert f"field '{field}'" in str(loader.value)
    # The verifier's, on a bundle signed by the builder with this lock.
    edited = [(n, data if n == LOCK else d) for n, d in members]
    bundle = write_members(
        tmp_path / "lock.stella.bundle.tgz", resign_manifest(edited, test_keys.signer("builder"))
    )
    result = run_cli(
        "bundle", "verify", bundle, "--trust-root", test_keys.trust_root,
        "--output-dir", tmp_path / "out",
    )  # fmt: skip
    assert result.exit_code == 2, result.stdout + result.stderr
    line = result.stderr.strip().splitlines()
    assert len(line) == 1 and LOCK in line[0] and f"field '{field}'" in line[0], line


def test_the_built_lock_passes_both(
    tmp_path: Path, probe_bundle: list[tuple[str, bytes]], test_keys: Any, run_cli: Any
) -> None:
    data = dict(probe_bundle)[LOCK]
    lock = parse_lock(json.loads(data), LOCK)
    assert lock.objects and all(len(o.sha256) == 64 for o in lock.objects.values())
    bundle = write_members(tmp_path / "b.stella.bundle.tgz", probe_bundle)
    result = run_cli(
        "bundle", "verify", bundle, "--trust-root", test_keys.trust_root,
        "--output-dir", tmp_path / "out",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
