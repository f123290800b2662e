"""Reproducible builds: same inputs and SOURCE_DATE_EPOCH give the same bytes; fixed headers."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.bundle.build import build_bundle
from stella_bundle.bundle.layout import entry_order
from stella_bundle.bundle.reader import SafeTarReader
from stella_bundle.bundle.tarwriter import ReproducibleTarWriter
from stella_bundle.errors import InputError
from tests.bundle.bundle_helpers import SOURCE_DATE_EPOCH, BundleInputs


def _build(inputs: BundleInputs, keys: Any, output: Path, epoch: str | None) -> Path:
    previous = os.environ.pop("SOURCE_DATE_EPOCH", None)
    if epoch is not None:
        os.environ["SOURCE_DATE_EPOCH"] = epoch
    try:
        build_bundle(
            function_maps=[inputs.function_map_envelope],
            evidence=[inputs.evidence],
            signer=keys.signer("builder"),
            output=output,
        )
    finally:
        os.environ.pop("SOURCE_DATE_EPOCH", None)
        if previous is not None:
            os.environ["SOURCE_DATE_EPOCH"] = previous
    return output


def test_same_inputs_give_identical_bytes(
    tmp_path: Path, bundle_inputs: BundleInputs, test_keys: Any, built_bundle: Path
) -> None:
    again = _build(bundle_inputs, test_keys, tmp_path / "demo.stella.bundle.tgz", SOURCE_DATE_EPOCH)
    # built_bundle was given FM.json, this one FM.dsse.json: the same map either way.
    assert again.read_bytes() == built_bundle.read_bytes()
    later = _build(
        bundle_inputs, test_keys, tmp_path / "b" / "demo.stella.bundle.tgz", "1763800000"
    )
    assert later.read_bytes() != built_bundle.read_bytes()


def test_headers_are_fixed(built_bundle: Path) -> None:
    raw = built_bundle.read_bytes()
    assert raw[:4] == b"\x1f\x8b\x08\x00", "gzip header must carry no FNAME flag"
    assert raw[4:8] == b"\0\0\0\0", "gzip header mtime must be 0"
    with tarfile.open(built_bundle, "r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[:2] == ["manifest.json", "manifest.dsse.json"]
    assert names == sorted(names, key=entry_order)
    assert len(set(names)) == len(names)
    for member in members:
        assert member.isreg()
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
        assert member.mtime == int(SOURCE_DATE_EPOCH)
        assert member.mode == 0o644


def test_bundle_is_a_standard_gzip_tar_for_tar_and_gzip(tmp_path: Path, built_bundle: Path) -> None:
    """ISA-L writes the gzip stream: GNU tar and gzip read it, every file as the manifest lists."""
    subprocess.run(["gzip", "-t", str(built_bundle)], check=True)
    out = tmp_path / "extracted"
    out.mkdir()
    subprocess.run(["tar", "-xzf", str(built_bundle), "-C", str(out)], check=True)
    manifest = json.loads((out / "manifest.json").read_bytes())
    listed = {entry["path"]: entry["sha256"] for entry in manifest["predicate"]["files"]}
    on_disk = {
        str(path.relative_to(out)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in out.rglob("*")
        if path.is_file()
    }
    assert listed and {name: on_disk[name] for name in listed} == listed
    assert set(on_disk) == set(listed) | {"manifest.json", "manifest.dsse.json"}


def test_layout_and_manifest_list_every_file(built_bundle: Path) -> None:
    with tarfile.open(built_bundle, "r:gz") as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    listed = {f["path"] for f in manifest["predicate"]["files"]}
    assert listed == set(names) - {"manifest.json", "manifest.dsse.json"}
    assert "function-maps/demo-function-map.json" in listed
    assert "function-maps/demo-function-map.dsse.json" in listed
    assert any(n.startswith("evidence/host-a/") and n.endswith(".seal.dsse.json") for n in listed)
    assert any(n.startswith("schemas/") for n in listed)
    views = [n for n in listed if n.startswith("observations/")]
    assert views == ["observations/2025-11-21-observations.ndjson"]
    assert manifest["predicate"]["observations"]["records"] == 200


def test_observations_view_is_sorted_canonical_and_complete(
    built_bundle: Path, bundle_inputs: BundleInputs
) -> None:
    from stella_bundle.canonical import canonical_bytes

    with tarfile.open(built_bundle, "r:gz") as tar:
        name = next(n for n in tar.getnames() if n.startswith("observations/"))
        lines = tar.extractfile(name).read().splitlines()  # type: ignore[union-attr]
    records = [json.loads(line) for line in lines]
    assert [canonical_bytes(r) for r in records] == lines
    assert [r["observed_at"] for r in records] == sorted(r["observed_at"] for r in records)
    assert sorted(lines) == sorted(canonical_bytes(r) for r in bundle_inputs.records)


def test_probes_are_shipped_with_their_lock(
    tmp_path: Path, bundle_inputs: BundleInputs, test_keys: Any
) -> None:
    from stella_bundle.collector.lockfile import PACKAGE_BPF_DIR

    if not (PACKAGE_BPF_DIR / "probes.lock.json").exists():
        pytest.skip("no precompiled probes in this checkout")
    output = tmp_path / "p.stella.bundle.tgz"
    build_bundle(
        function_maps=[bundle_inputs.function_map],
        evidence=[bundle_inputs.evidence],
        signer=test_keys.signer("builder"),
        output=output,
        probes=PACKAGE_BPF_DIR,
    )
    with tarfile.open(output, "r:gz") as tar:
        names = tar.getnames()
    assert "probes/probes.lock.json" in names
    assert any(n.endswith(".bpf.o") for n in names)
    from stella_bundle.formats.trust_root import TrustRoot
    from stella_bundle.verify import verify_bundle

    outcome = verify_bundle(output, TrustRoot.load(test_keys.trust_root))
    assert outcome.passed, outcome.failure_line()

    # A builder re-listing a swapped probe object cannot make it match the lock.
    from tests.bundle.bundle_helpers import read_members, resign_manifest, write_members

    members = read_members(output)
    swapped = [(n, d + b"\0" if n.endswith(".bpf.o") else d) for n, d in members]
    forged = write_members(
        tmp_path / "f.stella.bundle.tgz", resign_manifest(swapped, test_keys.signer("builder"))
    )
    outcome = verify_bundle(forged, TrustRoot.load(test_keys.trust_root))
    assert outcome.failed_step is not None and outcome.failed_step.spec.key == "file-list"
    assert "does not match probes/probes.lock.json" in outcome.failed_step.message


def test_unsealed_evidence_is_refused(tmp_path: Path, copy_inputs: Any, test_keys: Any) -> None:
    inputs = copy_inputs()
    (inputs / "evidence" / "host-a" / "0000000099.ndjson.partial").write_bytes(b"{}\n")
    with pytest.raises(InputError, match="unsealed evidence"):
        build_bundle(
            function_maps=[inputs / "demo-function-map.json"],
            evidence=[inputs / "evidence"],
            signer=test_keys.signer("builder"),
            output=tmp_path / "x.stella.bundle.tgz",
        )
    assert not list(tmp_path.glob("*.tgz")) and not list(tmp_path.glob(".*tmp"))


def test_unsigned_function_map_is_refused(tmp_path: Path, copy_inputs: Any, test_keys: Any) -> None:
    inputs = copy_inputs()
    (inputs / "demo-function-map.dsse.json").unlink()
    with pytest.raises(InputError, match="signed"):
        build_bundle(
            function_maps=[inputs / "demo-function-map.json"],
            evidence=[inputs / "evidence"],
            signer=test_keys.signer("builder"),
            output=tmp_path / "x.stella.bundle.tgz",
        )


def test_writer_and_reader_stream_in_bounded_memory(tmp_path: Path) -> None:
    """48 MiB through the writer and the reader with well under 48 MiB held at any time."""
    big = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    with open(big, "wb") as handle:
        for index in range(48):
            handle.write(block[index:] + block[:index])
    archive = tmp_path / "big.tgz"
    tracemalloc.start()
    try:
        with open(archive, "wb") as out, ReproducibleTarWriter(out, 0, compress_level=1) as tar:
            tar.add_file("evidence/big.bin", big, big.stat().st_size)
        _, peak_write = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        total = 0
        with SafeTarReader.open(archive) as reader:
            for _member, stream in reader:
                for chunk in stream.iter_chunks():
                    total += len(chunk)
        _, peak_read = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 48 << 20
    assert peak_write < 12 << 20, peak_write
    assert peak_read < 12 << 20, peak_read


def test_gzip_stream_matches_gzip_module(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with ReproducibleTarWriter(buffer, 7) as tar:
        tar.add_bytes("a.txt", b"hello")
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(buffer.getvalue()))) as tar:
        assert tar.extractfile("a.txt").read() == b"hello"  # type: ignore[union-attr]


def test_view_merges_chains_and_sorts_an_out_of_order_chain(
    tmp_path: Path, test_keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two chains, one written out of time order: the view is complete and sorted, and the
    bundle verifies (the external sort path, with runs forced small)."""
    import random

    from stella_bundle.bundle import observations_view
    from stella_bundle.formats.trust_root import TrustRoot
    from stella_bundle.verify import verify_bundle
    from tests.bundle.bundle_helpers import make_inputs, records_for, write_chain

    monkeypatch.setattr(observations_view, "RUN_BYTES", 4096)
    inputs = make_inputs(tmp_path / "in", test_keys)
    shuffled = records_for(inputs.nodes, 150)
    random.Random(7).shuffle(shuffled)
    write_chain(inputs.evidence, "host-b", test_keys.signer("collector"), shuffled)
    output = tmp_path / "two.stella.bundle.tgz"
    result = build_bundle(
        function_maps=[inputs.function_map],
        evidence=[inputs.evidence],
        signer=test_keys.signer("builder"),
        output=output,
    )
    assert result.chains == ("host-a", "host-b") and result.records == 350
    with tarfile.open(output, "r:gz") as tar:
        name = next(n for n in tar.getnames() if n.startswith("observations/"))
        lines = tar.extractfile(name).read().splitlines()  # type: ignore[union-attr]
    times = [json.loads(line)["observed_at"] for line in lines]
    assert times == sorted(times) and len(lines) == 350
    assert not list(tmp_path.glob(".stella-build-*")), "scratch runs are removed"
    outcome = verify_bundle(output, TrustRoot.load(test_keys.trust_root))
    assert outcome.passed, outcome.failure_line()


def test_unsorted_view_is_caught(tmp_path: Path, built_bundle: Path, test_keys: Any) -> None:
    from stella_bundle.formats.trust_root import TrustRoot
    from stella_bundle.verify import verify_bundle
    from tests.bundle.bundle_helpers import read_members, resign_manifest, write_members

    members = read_members(built_bundle)
    swapped = [
        (n, b"\n".join(reversed(d.splitlines())) + b"\n" if n.startswith("observations/") else d)
        for n, d in members
    ]
    bundle = write_members(
        tmp_path / "x.stella.bundle.tgz", resign_manifest(swapped, test_keys.signer("builder"))
    )
    outcome = verify_bundle(bundle, TrustRoot.load(test_keys.trust_root))
    assert outcome.failed_step is not None and outcome.failed_step.spec.key == "evidence-chains"
    assert "not sorted" in outcome.failed_step.message


def test_view_missing_a_record_is_caught(
    tmp_path: Path, built_bundle: Path, test_keys: Any
) -> None:
    from stella_bundle.formats.trust_root import TrustRoot
    from stella_bundle.verify import verify_bundle
    from tests.bundle.bundle_helpers import read_members, resign_manifest, write_members

    members = read_members(built_bundle)
    swapped = [
        (n, b"\n".join(d.splitlines()[1:]) + b"\n" if n.startswith("observations/") else d)
        for n, d in members
    ]
    bundle = write_members(
        tmp_path / "x.stella.bundle.tgz", resign_manifest(swapped, test_keys.signer("builder"))
    )
    outcome = verify_bundle(bundle, TrustRoot.load(test_keys.trust_root))
    assert outcome.failed_step is not None and outcome.failed_step.spec.key == "evidence-chains"
    assert "199 in the view, 200 in the chains" in outcome.failed_step.message


def test_build_memory_does_not_grow_with_the_evidence(tmp_path: Path, test_keys: Any) -> None:
    """Peak traced memory of a build is the same for 12,000 and 48,000 records."""
    from tests.bundle.bundle_helpers import chains_inputs

    peaks = []
    for count in (12_000, 48_000):
        inputs = chains_inputs(tmp_path / f"in-{count}", test_keys, {"host-m": 4_000}, count)
        tracemalloc.start()
        try:
            build_bundle(function_maps=[inputs.function_map], evidence=[inputs.evidence],
                         signer=test_keys.signer("builder"),
                         output=tmp_path / f"m{count}.stella.bundle.tgz")  # fmt: skip
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    small, large = peaks
    print(f"build peak traced memory: {small >> 10} KiB and {large >> 10} KiB")
    assert large < small * 1.2 + (1 << 20), peaks
    assert large < 32 << 20, peaks


def test_parallel_validation_gives_the_same_bundle_and_names_bad_records(
    tmp_path: Path, bundle_inputs: BundleInputs, test_keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large inputs are validated in worker processes: same bytes, same file:line errors."""
    import zstandard

    from stella_bundle.bundle import observations_view
    from stella_bundle.errors import MalformedDocumentError

    inline = _build(bundle_inputs, test_keys, tmp_path / "a" / "x.stella.bundle.tgz", "1")
    monkeypatch.setattr(observations_view, "PARALLEL_MIN_BYTES", 0)
    parallel = _build(bundle_inputs, test_keys, tmp_path / "b" / "x.stella.bundle.tgz", "1")
    assert parallel.read_bytes() == inline.read_bytes()

    chain = tmp_path / "bad" / "host-z"
    shutil.copytree(bundle_inputs.evidence / "host-a", chain)
    chunk = chain / "0000000004.ndjson.zst"
    lines = zstandard.ZstdDecompressor().decompress(chunk.read_bytes(), max_output_size=1 << 24)
    broken = lines.splitlines()
    broken[6] = broken[6].replace(b'"pid":4242', b'"pid":-1')
    chunk.write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(broken) + b"\n"))
    with pytest.raises(MalformedDocumentError) as caught:
        build_bundle(
            function_maps=[bundle_inputs.function_map],
            evidence=[chain],
            signer=test_keys.signer("builder"),
            output=tmp_path / "c" / "x.stella.bundle.tgz",
        )
    assert caught.value.path == str(chunk) and caught.value.line == 7
    assert caught.value.field == "pid"
    assert not (tmp_path / "c" / "x.stella.bundle.tgz").exists()


@pytest.mark.parametrize("block", [300, 1 << 20])
def test_view_written_in_the_order_pass_is_the_line_by_line_view(
    tmp_path: Path, test_keys: Any, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    """A single in-order chain's view is written while the chain is checked: blocks of the
    collector's shape as they are, others (blank or whitespace lines, no final newline,
    non-ASCII) line by line; either way the bytes of the line-by-line view, and an
    out-of-order chain still goes through the sort."""
    import hashlib as _hashlib

    import zstandard

    from stella_bundle.bundle import observations_view
    from stella_bundle.canonical import canonical_bytes
    from tests.bundle.bundle_helpers import make_inputs, records_for

    monkeypatch.setattr(observations_view, "READ_BLOCK", block)
    inputs = make_inputs(tmp_path / "in", test_keys)
    records = records_for(inputs.nodes, 120)
    records[70]["comm"] = "wörkload"
    lines = [canonical_bytes(record) for record in records]
    expected = b"".join(line + b"\n" for line in lines)
    chain = tmp_path / "chain"
    chain.mkdir()
    clean = chain / "0000000001.ndjson.zst"
    clean.write_bytes(zstandard.ZstdCompressor().compress(b"".join(x + b"\n" for x in lines[:60])))
    messy = chain / "0000000002.ndjson.zst"
    body = b"\n".join(lines[60:90]) + b"\n\n  \n\t\r\n" + b"\n".join(lines[90:])  # no final \n
    messy.write_bytes(zstandard.ZstdCompressor().compress(b"\n" + body))
    out = tmp_path / "view.ndjson"
    stats = observations_view.write_merged_view([[clean, messy]], out, tmp_path)
    assert out.read_bytes() == expected
    assert (stats.records, stats.order, stats.size) == (120, "chain", len(expected))
    assert stats.sha256 == _hashlib.sha256(expected).hexdigest()

    swapped = [*lines[:58], lines[59], lines[58]]
    clean.write_bytes(zstandard.ZstdCompressor().compress(b"".join(x + b"\n" for x in swapped)))
    stats = observations_view.write_merged_view([[clean, messy]], out, tmp_path)
    assert out.read_bytes() == expected
    assert (stats.records, stats.order) == (120, "merged") and stats.multiset
