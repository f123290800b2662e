"""The tamper matrix: each manipulation is detected with its named diagnosis and exit 1."""

from __future__ import annotations

import base64
import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from stella_bundle.attest.dsse import parse_envelope, sign_payload
from stella_bundle.attest.keys import load_signer
from stella_bundle.canonical import canonical_bytes
from stella_bundle.evidence.chain import verify_chain, verify_chain_files
from stella_bundle.evidence.layout import chunk_name, seal_name
from stella_bundle.formats.trust_root import TrustRoot


def _flip_chunk_byte(chain: Path) -> None:
    path = chain / chunk_name(4)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _rewrite_seal(
    chain: Path, sequence: int, payload_edit: Callable[[bytes], bytes], signer: Any = None
) -> None:
    path = chain / seal_name(sequence)
    envelope = parse_envelope(json.loads(path.read_bytes()))
    payload = payload_edit(envelope.payload)
    if signer is None:
        document = envelope.to_dict()
        document["payload"] = base64.b64encode(payload).decode()
    else:
        document = sign_payload(payload, envelope.payload_type, [signer]).to_dict()
    path.write_bytes(canonical_bytes(document))


def _flip_seal_payload_byte(chain: Path) -> None:
    def flip(payload: bytes) -> bytes:
        # One byte of the signed payload: a digit of the record count.
        index = payload.index(b'"records":') + len(b'"records":')
        data = bytearray(payload)
        data[index] = ord("9") if data[index] != ord("9") else ord("8")
        return bytes(data)

    _rewrite_seal(chain, 4, flip)


def _delete_middle(chain: Path) -> None:
    (chain / chunk_name(4)).unlink()
    (chain / seal_name(4)).unlink()


def _swap_chunks(chain: Path) -> None:
    a, b = chain / chunk_name(2), chain / chunk_name(5)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)


def _duplicate_chunk(chain: Path) -> None:
    shutil.copyfile(chain / chunk_name(3), chain / chunk_name(4))


def _duplicate_chunk_and_seal_at_end(chain: Path) -> None:
    shutil.copyfile(chain / chunk_name(6), chain / chunk_name(7))
    shutil.copyfile(chain / seal_name(6), chain / seal_name(7))


def _truncate_tail(chain: Path) -> None:
    (chain / chunk_name(6)).unlink()
    (chain / seal_name(6)).unlink()


def _insert_record(chain: Path) -> None:
    path = chain / chunk_name(3)
    content = zstandard.ZstdDecompressor().decompress(path.read_bytes(), max_output_size=1 << 24)
    lines = content.splitlines(keepends=True)
    forged = json.loads(lines[0])
    forged["function_name"] = "forged_call"
    lines.insert(5, canonical_bytes(forged) + b"\n")
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(b"".join(lines)))


CASES: dict[str, tuple[Callable[..., None], set[str]]] = {
    "chunk byte flipped": (_flip_chunk_byte, {"tampered_chunk"}),
    "seal payload byte flipped": (_flip_seal_payload_byte, {"tampered_seal", "broken_link"}),
    "chunk deleted from the middle": (_delete_middle, {"gap"}),
    "two chunks swapped": (_swap_chunks, {"reordered"}),
    "chunk duplicated over the next": (_duplicate_chunk, {"duplicated"}),
    "chunk and seal duplicated at the end": (_duplicate_chunk_and_seal_at_end, {"duplicated"}),
    "last chunk and seal removed": (_truncate_tail, {"no_final_seal"}),
    "record inserted and recompressed": (_insert_record, {"tampered_chunk"}),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, test_keys: Any) -> Path:
    from evidence_support import COLLECTOR, make_record

    from stella_bundle.evidence.writer import ChunkWriter, WriterConfig

    evidence = tmp_path_factory.mktemp("pristine")
    config = WriterConfig(max_records=20)
    with ChunkWriter.open(
        evidence, "chain-t", test_keys.signer("collector"), config, COLLECTOR
    ) as writer:
        for index in range(6 * 20 - 1):
            writer.append(make_record(index))
    return evidence / "chain-t"


@pytest.fixture
def chain(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "chain-t"
    shutil.copytree(pristine, copy)
    return copy


def test_pristine_chain_passes(chain: Path, test_keys: Any, run_cli: Any) -> None:
    report = verify_chain(chain, test_keys.trust_root)
    assert report.passed and report.final_seal and len(report.chunks) == 6
    assert {f.code for f in report.findings} == set()
    assert (
        run_cli("signals", "verify-chain", chain, "--trust-root", test_keys.trust_root).exit_code
        == 0
    )


@pytest.mark.parametrize("case", list(CASES))
def test_tamper_is_named_and_fails(case: str, chain: Path, test_keys: Any, run_cli: Any) -> None:
    tamper, expected = CASES[case]
    tamper(chain)
    report = verify_chain(chain, test_keys.trust_root)
    assert not report.passed
    assert expected <= report.codes(), [f.to_dict() for f in report.findings]
    result = run_cli(
        "signals", "verify-chain", chain, "--trust-root", test_keys.trust_root, "--format", "json"
    )
    assert result.exit_code == 1
    findings = json.loads(result.stdout)["chains"][0]["findings"]
    assert expected <= {f["code"] for f in findings}


def test_tampered_chunk_names_file_and_digests(chain: Path, test_keys: Any) -> None:
    _flip_chunk_byte(chain)
    finding = next(
        f for f in verify_chain(chain, test_keys.trust_root).findings if f.code == "tampered_chunk"
    )
    assert finding.file == chunk_name(4) and finding.sequence == 4
    assert finding.expected and finding.actual and finding.expected != finding.actual


def test_inserted_record_reports_the_count(chain: Path, test_keys: Any) -> None:
    _insert_record(chain)
    finding = next(
        f for f in verify_chain(chain, test_keys.trust_root).findings if f.code == "tampered_chunk"
    )
    assert "21 records where the seal says 20" in finding.message


@pytest.mark.parametrize(
    ("role", "code"), [("auditor", "wrong_role"), ("stranger", "tampered_seal")]
)
def test_seal_resigned_by_other_key(chain: Path, test_keys: Any, role: str, code: str) -> None:
    _rewrite_seal(chain, 3, lambda payload: payload, signer=load_signer(test_keys.private(role)))
    report = verify_chain(chain, test_keys.trust_root)
    assert code in report.codes() and not report.passed
    entry = next(c for c in report.chunks if c.sequence == 3)
    assert entry.signature in ("wrong_role", "failed")


def test_unsigned_seal(chain: Path, test_keys: Any) -> None:
    path = chain / seal_name(2)
    document = json.loads(path.read_bytes())
    document["signatures"] = []
    path.write_bytes(canonical_bytes(document))
    report = verify_chain(chain, test_keys.trust_root)
    assert "unsigned_seal" in report.codes() and "broken_link" in report.codes()
    # Without a trust root an empty signature list is still seen.
    assert "unsigned_seal" in verify_chain(chain, None).codes()


def test_without_trust_root_signatures_are_not_checked(chain: Path, run_cli: Any) -> None:
    report = verify_chain(chain, None)
    assert report.codes() == {"signatures_not_checked"} and not report.passed
    result = run_cli("signals", "verify-chain", chain)
    assert result.exit_code == 1 and "NOT checked" in result.stdout
    structural = run_cli("signals", "verify-chain", chain, "--structure-only")
    assert structural.exit_code == 0
    assert "signatures not_checked" in structural.stdout


def test_trust_root_of_the_wrong_collector(chain: Path, test_keys: Any, tmp_path: Path) -> None:
    root = TrustRoot.load(test_keys.trust_root)
    root.roles["collector"].keyids = list(root.roles["auditor"].keyids)
    path = tmp_path / "other-root.json"
    root.save(path)
    report = verify_chain(chain, path)
    assert "wrong_role" in report.codes()


def test_verify_chain_files_streams_from_a_tar(chain: Path, test_keys: Any, tmp_path: Path) -> None:
    archive = tmp_path / "bundle.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(chain, arcname="evidence/chain-t")
    root = TrustRoot.load(test_keys.trust_root)
    with tarfile.open(archive) as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        seals = {}
        for name, member in members.items():
            if name.endswith(".seal.dsse.json"):
                handle = tar.extractfile(member)
                assert handle is not None
                seals[int(name[:10])] = handle.read()

        def opener(sequence: int) -> io.BufferedReader:
            handle = tar.extractfile(members[chunk_name(sequence)])
            assert handle is not None
            return handle  # type: ignore[return-value]

        report = verify_chain_files("chain-t", seals, opener, root, location="bundle.tar")
    assert report.passed and report.records == 119
