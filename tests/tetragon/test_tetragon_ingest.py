"""Events of every kind, built from Tetragon's proto and serialised as its export, ingested
into a signed chain: records, seals, and the function map's verdict over them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tetragon_support import (
    APP,
    APP_PURL,
    KERNEL,
    LIBSSL,
    LIBSSL_PURL,
    TetragonProto,
    exec_event,
    exit_event,
    kprobe,
    shop_map,
    to_line,
    tracepoint,
    uprobe,
    usdt,
    write_lines,
)

from stella_bundle.evidence.reader import iter_chain_records
from stella_bundle.evidence.seal import parse_seal
from stella_bundle.formats.node_hash import node_hash

CONTAINER = "ab" * 32
IMAGE = "sha256:" + "cd" * 32


def every_kind(pb: TetragonProto) -> list[Any]:
    return [
        exec_event(pb, binary=APP, arguments="--port 8080"),
        uprobe(pb, APP, "checkout", binary=APP),
        uprobe(pb, LIBSSL, "SSL_write", binary=APP),
        uprobe(pb, LIBSSL, "SSL_read", binary=APP, time="2026-01-23T00:10:00.5Z"),
        usdt(pb, APP, "shop", "order_placed", binary=APP),
        tracepoint(pb, "syscalls", "sys_enter_openat", binary=APP),
        kprobe(pb, "tcp_connect", binary=APP),
        exit_event(pb, binary=APP),
    ]


def chain_records(evidence: Path) -> list[dict[str, Any]]:
    (chain,) = [p for p in evidence.iterdir() if p.is_dir()]
    return list(iter_chain_records(chain))


def seals(evidence: Path) -> list[Any]:
    (chain,) = [p for p in evidence.iterdir() if p.is_dir()]
    return [parse_seal(p.read_bytes(), p) for p in sorted(chain.glob("*.seal.dsse.json"))]


@pytest.fixture
def ingested(tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, run_cli: Any) -> Any:
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    export = write_lines(tmp_path / "tetragon.log", every_kind(tetragon_pb))
    evidence = tmp_path / "evidence"
    result = run_cli(
        "tetragon",
        "ingest",
        export,
        "--function-map",
        fm_path,
        "--target",
        evidence,
        "--key",
        test_keys.private("collector"),
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.stderr
    return fm_path, evidence, json.loads(result.stdout)


def test_every_kind_becomes_a_record_with_node_probe_and_container(ingested: Any) -> None:
    _, evidence, summary = ingested
    assert summary["records"] == 8 and summary["dropped"] == {}
    records = chain_records(evidence)
    by_symbol = {(r["function_name"], r["probe_type"]): r for r in records}
    expected = {
        ("checkout", "uprobe"): node_hash(APP_PURL, "checkout"),
        ("SSL_write", "uprobe"): node_hash(LIBSSL_PURL, "SSL_write"),
        ("SSL_read", "uprobe"): node_hash(LIBSSL_PURL, "SSL_read"),
        ("shop:order_placed", "usdt"): node_hash(APP_PURL, "shop:order_placed"),
        ("openat", "tracepoint"): node_hash(KERNEL, "openat"),
        ("tcp_connect", "kprobe"): node_hash(KERNEL, "tcp_connect"),
        ("execve", "tracepoint"): node_hash(KERNEL, "execve"),
        ("execve", "kprobe"): node_hash(KERNEL, "execve"),  # the exit
    }
    assert {k: r["node_hash"] for k, r in by_symbol.items()} == expected
    for record in records:
        assert record["container_id"] == CONTAINER  # the full id, scheme removed
        assert record["pod_name"] == "web-7d9f"
        assert record["namespace"] == "shop"
        assert record["image_digest"] == IMAGE
        assert record["host"] == "node-1"
        assert record["pid"] == 4242
    checkout = by_symbol[("checkout", "uprobe")]
    assert checkout["observed_at"] == "2026-01-23T00:10:00.123456Z"
    assert checkout["build_id"] == "aa" * 20
    assert checkout["binary_path"] == APP
    assert by_symbol[("SSL_read", "uprobe")]["observed_at"] == "2026-01-23T00:10:00.500000Z"
    assert by_symbol[("execve", "tracepoint")]["kind"] == "exec"
    assert by_symbol[("execve", "tracepoint")]["details"]["path"] == APP
    assert by_symbol[("execve", "kprobe")]["details"]["event"] == "process_exit"


def test_seal_names_the_source(ingested: Any) -> None:
    _, evidence, _ = ingested
    (seal,) = seals(evidence)
    collector = seal.predicate.collector
    assert collector.id == "stella-tetragon"
    assert collector.host == "node-1"
    assert collector.source == {
        "type": "tetragon",
        "node_name": "node-1",
        "export_file": str(evidence.parent / "tetragon.log"),
    }
    assert seal.predicate.final


def test_function_map_verify_passes_over_the_chain(
    ingested: Any, run_cli: Any, test_keys: Any
) -> None:
    fm_path, evidence, _ = ingested
    chain = next(p for p in evidence.iterdir() if p.is_dir())
    check = run_cli("signals", "verify-chain", chain, "--trust-root", test_keys.trust_root)
    assert check.exit_code == 0, check.stdout + check.stderr
    result = run_cli(
        "function-map",
        "verify",
        "--function-map",
        fm_path,
        "--evidence",
        evidence,
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] is True
    assert report["unexpected_symbols"] == []


def test_verify_fails_when_a_node_was_never_seen(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, run_cli: Any
) -> None:
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    events = [e for e in every_kind(tetragon_pb) if not e.HasField("process_usdt")]
    export = write_lines(tmp_path / "t.log", events)
    evidence = tmp_path / "evidence"
    ingest = run_cli(
        "tetragon", "ingest", export, "--function-map", fm_path, "--target", evidence,
        "--key", test_keys.private("collector"),
    )  # fmt: skip
    assert ingest.exit_code == 0, ingest.stderr
    result = run_cli(
        "function-map",
        "verify",
        "--function-map",
        fm_path,
        "--evidence",
        evidence,
        "--format",
        "json",
    )
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["verified"] is False
    assert "shop:order_placed" in json.dumps(report["missing_symbols"])


def test_unmappable_events_are_counted_in_the_seal(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, run_cli: Any
) -> None:
    pb = tetragon_pb
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    lsm = pb.events.GetEventsResponse(node_name="node-1")
    lsm.process_lsm.function_name = "file_open"
    unknown_binary = uprobe(pb, "/usr/bin/other", "main")
    no_symbol = uprobe(pb, APP, "")
    export = tmp_path / "t.log"
    export.write_bytes(
        to_line(uprobe(pb, APP, "checkout"))
        + to_line(lsm)
        + to_line(unknown_binary)
        + to_line(no_symbol)
        + b'{"process_future": {"x": 1}, "node_name": "node-1"}\n'
        + b'{"process_uprobe": "not an object", "time": "2026-01-23T00:00:00Z"}\n'
    )
    evidence = tmp_path / "evidence"
    result = run_cli(
        "tetragon", "ingest", export, "--function-map", fm_path, "--target", evidence,
        "--key", test_keys.private("collector"), "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    expected = {
        "process_lsm:unsupported_kind": 1,
        "process_uprobe:unknown_binary_or_symbol": 1,
        "process_uprobe:missing_or_wrong_type:symbol": 1,
        "unknown:unknown_kind": 1,
        "process_uprobe:wrong_type:process_uprobe": 1,
    }
    assert summary["records"] == 1
    assert summary["dropped"] == expected
    assert f"{export}:2: process_lsm:unsupported_kind" in result.stderr
    (seal,) = seals(evidence)
    from stella_bundle.schema import validate_document

    validate_document("evidence-chunk", seal.statement)  # with source and by_reason
    chain = next(p for p in evidence.iterdir() if p.is_dir())
    check = run_cli("signals", "verify-chain", chain, "--trust-root", test_keys.trust_root)
    assert check.exit_code == 0, check.stdout + check.stderr
    assert "5 events were not recorded" in check.stdout + check.stderr
    assert seal.predicate.loss.filtered_out == 5
    assert {
        k.removeprefix("dropped."): v
        for k, v in seal.predicate.loss.by_reason.items()
        if k.startswith("dropped.")
    } == expected


def test_without_time_the_exec_start_time_is_used(
    tmp_path: Path, tetragon_pb: TetragonProto
) -> None:
    from stella_bundle.tetragon.events import EventMapper
    from stella_bundle.tetragon.nodes import NodeIndex

    line = to_line(exec_event(tetragon_pb))
    event = json.loads(line)
    del event["time"]
    record = EventMapper(NodeIndex()).map(event)
    assert isinstance(record, dict)
    assert record["observed_at"] == "2026-01-23T00:00:00.123456Z"
    assert record["node_hash"] == node_hash(KERNEL, "execve")


def test_times_are_normalised_to_utc_microseconds() -> None:
    from stella_bundle.tetragon.events import TimeNormalizer

    normalise = TimeNormalizer()
    assert normalise("2026-01-23T00:10:00Z") == "2026-01-23T00:10:00.000000Z"
    assert normalise("2026-01-23T00:10:00.1Z") == "2026-01-23T00:10:00.100000Z"
    assert normalise("2026-01-23T00:10:00.123456789Z") == "2026-01-23T00:10:00.123456Z"
    assert normalise("2026-01-23T02:10:00.25+02:00") == "2026-01-23T00:10:00.250000Z"
    assert normalise("2026-02-30T00:00:00Z") is None
    assert normalise(1769126400) is None


def test_sbom_maps_binaries_outside_the_map(tmp_path: Path, tetragon_pb: TetragonProto) -> None:
    from stella_bundle.functionmap.sbom import load_sbom
    from stella_bundle.tetragon.events import EventMapper
    from stella_bundle.tetragon.nodes import NodeIndex

    sbom_path = tmp_path / "sbom.json"
    sbom_path.write_text(
        json.dumps(
            {
                "bomFormat": "CycloneDX",
                "specVersion": "1.5",
                "version": 1,
                "components": [
                    {
                        "type": "library",
                        "name": "zlib",
                        "version": "1.2.13",
                        "purl": "pkg:deb/debian/zlib1g@1.2.13",
                        "evidence": {"occurrences": [{"location": "/usr/lib/libz.so.1"}]},
                    },
                    {
                        "type": "application",
                        "name": "nginx",
                        "version": "1.22",
                        "purl": "pkg:deb/debian/nginx@1.22",
                    },
                ],
            }
        )
    )
    mapper = EventMapper(NodeIndex(sbom=load_sbom(sbom_path)))
    deflate = mapper.map(json.loads(to_line(uprobe(tetragon_pb, "/usr/lib/libz.so.1", "deflate"))))
    assert isinstance(deflate, dict)
    assert deflate["node_hash"] == node_hash("pkg:deb/debian/zlib1g@1.2.13", "deflate")
    nginx = mapper.map(
        json.loads(to_line(uprobe(tetragon_pb, "/usr/sbin/nginx", "ngx_http_handler")))
    )
    assert isinstance(nginx, dict)
    assert nginx["purl"] == "pkg:deb/debian/nginx@1.22"
    unknown = mapper.map(json.loads(to_line(uprobe(tetragon_pb, "/usr/bin/x", "main"))))
    assert unknown == "process_uprobe:unknown_binary_or_symbol"


def test_docker_only_process_has_no_container_id(
    tmp_path: Path, tetragon_pb: TetragonProto
) -> None:
    """process.docker is a truncated id: never used as the container id."""
    from stella_bundle.tetragon.events import EventMapper
    from stella_bundle.tetragon.nodes import NodeIndex

    message = kprobe(tetragon_pb, "tcp_connect", container_id=None)
    message.process_kprobe.process.docker = "19a02291e106ce6227b684197be232e"
    record = EventMapper(NodeIndex()).map(json.loads(to_line(message)))
    assert isinstance(record, dict)
    assert "container_id" not in record


def test_tetragon_rate_limit_drops_land_in_the_seal(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, run_cli: Any
) -> None:
    """rate_limit_info: events Tetragon itself dropped in the kernel are loss, not silence."""
    pb = tetragon_pb
    limited = pb.events.GetEventsResponse(node_name="node-1")
    limited.rate_limit_info.number_of_dropped_process_events = 1234
    export = tmp_path / "t.log"
    export.write_bytes(to_line(uprobe(pb, APP, "checkout")) + to_line(limited))
    assert b'"1234"' in export.read_bytes()  # a uint64: a string in the export
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    evidence = tmp_path / "evidence"
    result = run_cli(
        "tetragon", "ingest", export, "--function-map", fm_path, "--target", evidence,
        "--key", test_keys.private("collector"), "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["upstream_dropped"] == 1234
    (seal,) = seals(evidence)
    assert seal.predicate.loss.ring_buffer_dropped == 1234
    assert seal.predicate.loss.by_reason["dropped.rate_limit_info:unsupported_kind"] == 1


@pytest.mark.parametrize("claim", ["location", "name"])
def test_a_binary_two_sbom_components_claim_is_not_guessed(
    claim: str, tmp_path: Path, tetragon_pb: TetragonProto
) -> None:
    # Two components with different purls owning one binary (one occurrence location, or one
    # file name): the first in the SBOM's order won, so reordering the components (which
    # means nothing in CycloneDX) changed the purl and node_hash of every event of that
    # binary. Now ambiguous: no guess in either order, as for a file name two map binaries
    # share; the events are dropped and counted (unknown_binary_or_symbol).
    from stella_bundle.functionmap.sbom import load_sbom
    from stella_bundle.tetragon.events import EventMapper
    from stella_bundle.tetragon.nodes import NodeIndex

    def component(purl: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "library", "name": "libz", "purl": purl}
        if claim == "location":
            entry["name"] = purl.rsplit("/", 1)[1].split("@")[0]
            entry["evidence"] = {"occurrences": [{"location": "/usr/lib/libz.so.1"}]}
        return entry

    claimants = [component("pkg:deb/debian/zlib1g@1.2.13"), component("pkg:generic/zlib@1.3")]
    same = [component("pkg:deb/debian/zlib1g@1.2.13")] * 2  # one purl twice: no ambiguity
    outcomes = []
    for components in (claimants, claimants[::-1], same):
        sbom_path = tmp_path / "sbom.json"
        sbom_path.write_text(
            json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.5", "components": components})
        )
        mapper = EventMapper(NodeIndex(sbom=load_sbom(sbom_path)))
        event = json.loads(to_line(uprobe(tetragon_pb, "/usr/lib/libz.so.1", "deflate")))
        outcomes.append(mapper.map(event))
    assert outcomes[0] == outcomes[1] == "process_uprobe:unknown_binary_or_symbol"
    assert isinstance(outcomes[2], dict)
    assert outcomes[2]["purl"] == "pkg:deb/debian/zlib1g@1.2.13"
