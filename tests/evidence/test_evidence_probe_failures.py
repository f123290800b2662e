"""Probe failures and reattachments in seals: written by the writer, kept through a crash,
refused when malformed."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from evidence_support import COLLECTOR, make_record

from stella_bundle.errors import MalformedDocumentError
from stella_bundle.evidence.chain import verify_chain
from stella_bundle.evidence.layout import seal_name
from stella_bundle.evidence.seal import parse_seal
from stella_bundle.evidence.writer import ChunkWriter, WriterConfig
from stella_bundle.formats.seal import ProbeFailure, ProbeReattachment, SealPredicate
from stella_bundle.schema import validate_document

FAILURE = ProbeFailure(
    "sha256:" + "a" * 64,
    "EVP_ASYM_CIPHER_up_ref",
    "pkg:deb/debian/libssl3",
    "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
    524,
    "ENOTSUPP: the kernel cannot probe this function's first instruction",
)
MISSING = ProbeFailure("sha256:" + "b" * 64, "nope", "pkg:generic/app@1", None, 2, "ENOENT")
REPLACED = ProbeReattachment(
    "binary_replaced",
    "/usr/bin/app",
    "aa" * 20,
    "bb" * 20,
    3,
    1,
    "replaced (inode 1, build id aa.. -> inode 2, build id bb..)",
)
LOST = ProbeReattachment("link_lost", None, None, None, 2, 0, "2 link(s) no longer attached")


def _predicate(chain: Path, sequence: int) -> SealPredicate:
    return parse_seal((chain / seal_name(sequence)).read_bytes()).predicate


def test_failures_land_in_the_next_seal_only(tmp_path: Path, test_keys: Any) -> None:
    signer = test_keys.signer("collector")
    with ChunkWriter.open(tmp_path, "c", signer, WriterConfig(max_records=2), COLLECTOR) as w:
        w.add_probe_failures([FAILURE, MISSING])
        for index in range(3):
            w.append(make_record(index))
    first, second = _predicate(tmp_path / "c", 1), _predicate(tmp_path / "c", 2)
    assert first.probe_failures == (FAILURE, MISSING)
    assert first.loss.by_reason == {"gap.probe_attach_failed": 2}
    assert second.probe_failures == () and "probe_failures" not in second.to_dict()
    validate_document("evidence-chunk", first.to_dict())
    assert verify_chain(tmp_path / "c", test_keys.trust_root).passed


def test_failures_survive_a_crash_into_the_recovered_seal(tmp_path: Path, test_keys: Any) -> None:
    signer = test_keys.signer("collector")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child is killed
        try:
            writer = ChunkWriter.open(tmp_path, "c", signer, WriterConfig(), COLLECTOR)
            writer.add_probe_failures([FAILURE])
            writer.append(make_record(0))
            writer.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    os.waitpid(pid, 0)
    with ChunkWriter.open(tmp_path, "c", signer, WriterConfig(), COLLECTOR):
        pass
    recovered = _predicate(tmp_path / "c", 1)
    assert recovered.reason == "recovered"
    assert recovered.probe_failures == (FAILURE,)
    assert recovered.loss.by_reason["gap.probe_attach_failed"] == 1


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ({"errno": 0}, "errno"),
        ({"errno": True}, "errno"),
        ({"error": ""}, "error"),
        ({"binary_path": 7}, "binary_path"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_a_malformed_failure_is_refused_with_its_field(edit: dict[str, Any], field: str) -> None:
    document = {**FAILURE.to_dict(), **edit}
    with pytest.raises(MalformedDocumentError) as caught:
        ProbeFailure.from_dict(document, "seal.json", "predicate.probe_failures[0]")
    assert caught.value.field == f"predicate.probe_failures[0].{field}"


def test_reattachments_land_in_the_next_seal_counted_as_gaps(
    tmp_path: Path, test_keys: Any
) -> None:
    signer = test_keys.signer("collector")
    with ChunkWriter.open(tmp_path, "c", signer, WriterConfig(max_records=2), COLLECTOR) as w:
        w.add_probe_reattachments([REPLACED, LOST])
        for index in range(3):
            w.append(make_record(index))
    first, second = _predicate(tmp_path / "c", 1), _predicate(tmp_path / "c", 2)
    assert first.probe_reattachments == (REPLACED, LOST)
    assert first.loss.by_reason == {"gap.binary_replaced": 4, "gap.link_lost": 2}
    assert second.probe_reattachments == () and "probe_reattachments" not in second.to_dict()
    validate_document("evidence-chunk", first.to_dict())
    assert verify_chain(tmp_path / "c", test_keys.trust_root).passed


def test_reattachments_survive_a_crash_into_the_recovered_seal(
    tmp_path: Path, test_keys: Any
) -> None:
    signer = test_keys.signer("collector")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child is killed
        try:
            writer = ChunkWriter.open(tmp_path, "c", signer, WriterConfig(), COLLECTOR)
            writer.add_probe_reattachments([REPLACED])
            os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    os.waitpid(pid, 0)
    with ChunkWriter.open(tmp_path, "c", signer, WriterConfig(), COLLECTOR):
        pass
    recovered = _predicate(tmp_path / "c", 1)
    assert recovered.reason == "recovered"
    assert recovered.probe_reattachments == (REPLACED,)
    assert recovered.loss.by_reason == {"gap.binary_replaced": 4}


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ({"reason": "moved"}, "reason"),
        ({"reattached": -1}, "reattached"),
        ({"failed": True}, "failed"),
        ({"build_id": ""}, "build_id"),
        ({"detail": ""}, "detail"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_a_malformed_reattachment_is_refused_with_its_field(
    edit: dict[str, Any], field: str
) -> None:
    document = {**REPLACED.to_dict(), **edit}
    where = "predicate.probe_reattachments[0]"
    with pytest.raises(MalformedDocumentError) as caught:
        ProbeReattachment.from_dict(document, "seal.json", where)
    assert caught.value.field == f"{where}.{field}"
    with pytest.raises(MalformedDocumentError) as caught:
        ProbeReattachment.from_dict(
            {k: v for k, v in document.items() if k != "detail"}, None, where
        )
