"""Generating function maps from real SBOMs, call stacks, static call graphs and ELF files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from stella_bundle.formats.node_hash import canonical_purl, node_hash
from stella_bundle.functionmap.generate import GenerateOptions, generate_function_map
from stella_bundle.functionmap.load import load_function_map
from stella_bundle.schema import validate_document
from tests.functionmap.functionmap_helpers import (
    EPOCH,
    LIBC,
    LIBCRYPTO,
    LIBSSL,
    component_purl,
    make_map,
)

ROOT_PURL = "pkg:maven/com.example/vuln-spring@0.0.1-SNAPSHOT?type=jar"


def _defined_functions(library: Path) -> set[str]:
    """Independent of the code under test: raw .dynsym of the real library."""
    with library.open("rb") as handle:
        elf = ELFFile(handle)
        return {
            s.name.split("@")[0]
            for s in elf.get_section_by_name(".dynsym").iter_symbols()
            if s["st_shndx"] != "SHN_UNDEF"
            and s["st_info"]["type"] in ("STT_FUNC", "STT_GNU_IFUNC")
        }


def test_java_sbom_call_stacks_become_paths(java_sbom: Path, run_cli, tmp_path: Path) -> None:
    output = tmp_path / "function-map.json"
    result = run_cli(
        "function-map", "generate", "--sbom", java_sbom, "--service", "vuln-spring",
        "--output", output, "--build-id", "ci-42",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    statement = json.loads(output.read_bytes())
    validate_document("function-map", statement["predicate"], output)
    assert statement["predicateType"] == "https://stella.ops/predicates/function-map/v1"
    assert (
        statement["subject"][0]["digest"]["sha256"]
        == hashlib.sha256(java_sbom.read_bytes()).hexdigest()
    )
    predicate = statement["predicate"]
    assert predicate["build_id"] == "ci-42"
    assert predicate["sbom"]["spec_version"] == "1.5"

    sbom = json.loads(java_sbom.read_text())
    with_stacks = {c["name"]: c for c in sbom["components"] if "callstack" in c.get("evidence", {})}
    assert len(with_stacks) == 6
    stack_paths = [p for p in predicate["expected_paths"] if p["path_id"].startswith("callstack/")]
    assert {p["path_id"].split("/")[1] for p in stack_paths} == set(with_stacks)
    for path in stack_paths:
        component = with_stacks[path["path_id"].split("/")[1]]
        frames = component["evidence"]["callstack"]["frames"]
        # Frames are the application's own code (com.example.*): the root component's purl.
        expected_symbols = []
        for frame in frames:
            symbol = f"{frame['module']}.{frame['function']}"
            if not expected_symbols or expected_symbols[-1] != symbol:
                expected_symbols.append(symbol)
        assert [n["symbol"] for n in path["nodes"]] == expected_symbols
        for node in path["nodes"]:
            assert node["purl"] == canonical_purl(ROOT_PURL)
            key = node["purl"] + "#" + node["symbol"]
            assert node["node_hash"] == "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    jwt = next(p for p in stack_paths if p["path_id"].startswith("callstack/java-jwt/"))
    assert jwt["tag"] == "auth"  # java-jwt is an auth component in the catalog


def test_debian_sbom_catalog_paths_exist_in_real_libraries(
    debian_sbom: Path, tmp_path: Path
) -> None:
    libssl3 = component_purl(debian_sbom, "libssl3")
    libc6 = component_purl(debian_sbom, "libc6")
    result = generate_function_map(
        GenerateOptions(
            sbom=debian_sbom,
            service="tls-client",
            hot_functions=["crypto/*", "net/*", "file/*"],
            binary_paths={libc6: str(LIBC)},
        )
    )
    fmap = result.function_map
    validate_document("function-map", fmap.to_dict())
    tags = {p.tag for p in fmap.expected_paths}
    assert {"crypto", "net", "file"} <= tags
    assert "exec" not in tags  # not selected by the globs
    ssl_functions = _defined_functions(LIBSSL) | _defined_functions(LIBCRYPTO)
    libc_functions = _defined_functions(LIBC)
    for path in fmap.expected_paths:
        node = path.sink
        if path.tag == "crypto":
            assert node.purl == libssl3  # the library package, not the `openssl` CLI package
            assert node.symbol in ssl_functions, node.symbol
        else:
            assert node.purl == libc6
            assert node.symbol in libc_functions, node.symbol
            assert node.binary_path == str(LIBC) and node.build_id
    assert {"SSL_do_handshake", "SSL_read", "SSL_write"} <= {
        p.sink.symbol for p in fmap.expected_paths
    }
    assert {"connect", "openat"} <= {p.sink.symbol for p in fmap.expected_paths}
    assert result.not_observable == []
    # Priorities: crypto first.
    assert fmap.expected_paths[0].tag == "crypto"
    assert [p.priority for p in fmap.expected_paths] == sorted(
        (p.priority for p in fmap.expected_paths), reverse=True
    )


def test_binary_path_reports_symbols_not_observable(
    debian_sbom: Path, tmp_path: Path, run_cli
) -> None:
    libssl3 = component_purl(debian_sbom, "libssl3")
    user_catalog = tmp_path / "catalog.json"
    user_catalog.write_text(json.dumps({"components": [{
        "name": "openssl", "symbols": [{"symbol": "SSL_does_not_exist", "tag": "crypto"}],
    }]}))  # fmt: skip
    output = tmp_path / "fm.json"
    result = run_cli(
        "function-map", "generate", "--sbom", debian_sbom, "--service", "s", "--output", output,
        "--catalog", user_catalog, "--hot-functions", "openssl/SSL_*",
        "--binary-path", f"{libssl3}={LIBSSL}",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "not observable" in result.stderr and "SSL_does_not_exist" in result.stderr
    fmap = load_function_map(output).function_map
    symbols = {p.sink.symbol for p in fmap.expected_paths}
    assert "SSL_does_not_exist" not in symbols
    # ELF source: COMPONENT/SYMBOL globs enumerate the binary's own SSL_* functions.
    assert "SSL_CTX_set_cipher_list" in symbols
    assert all(s.startswith("SSL_") for s in symbols)
    assert all(p.sink.binary_path == str(LIBSSL) for p in fmap.expected_paths)


def test_hot_function_globs_tags_optional_and_rates(debian_sbom: Path) -> None:
    fmap = make_map(
        debian_sbom,
        hot_functions=["openssl/SSL_*", "net/connect"],
        optional=["net/*"],
        tag_rates={"crypto": 1.0},
    )
    sinks = {p.sink.symbol: p for p in fmap.expected_paths}
    assert "connect" in sinks and "accept" not in sinks
    assert all(s.startswith("SSL_") for s in sinks if s != "connect")
    assert "EVP_EncryptInit_ex" not in sinks
    assert sinks["connect"].optional and not sinks["SSL_read"].optional
    assert fmap.coverage.tag_min_rates == {"crypto": 1.0}
    assert fmap.hot_functions == ("openssl/SSL_*", "net/connect")


def test_static_analysis_paths_are_enumerated_bounded_and_deduplicated(
    debian_sbom: Path, tmp_path: Path
) -> None:
    app = "pkg:generic/tls-client@1.0"
    libssl3 = component_purl(debian_sbom, "libssl3")
    graph = {
        "format": "stella-static-callgraph/v1",
        "nodes": [
            {"id": "main", "purl": app, "symbol": "main"},
            {"id": "a", "purl": app, "symbol": "_ZN6client7connectEv"},
            {"id": "b", "purl": app, "symbol": "client_retry"},
            {"id": "hs", "purl": libssl3, "symbol": "SSL_do_handshake@@OPENSSL_3.0.0"},
            {"id": "log", "purl": app, "symbol": "log_line"},
        ],
        "edges": [
            {"from": "main", "to": "a"}, {"from": "main", "to": "b"}, {"from": "b", "to": "a"},
            {"from": "a", "to": "hs"}, {"from": "a", "to": "a"}, {"from": "main", "to": "log"},
        ],
        "entrypoints": ["main", "main"],
    }  # fmt: skip
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(graph))
    fmap = make_map(debian_sbom, static_analysis=path, hot_functions=["crypto/SSL_do_handshake"])
    static = [p for p in fmap.expected_paths if p.path_id.startswith("static/")]
    chains = sorted(tuple(n.symbol for n in p.nodes) for p in static)
    assert chains == [
        ("main", "client::connect", "SSL_do_handshake"),
        ("main", "client_retry", "client::connect", "SSL_do_handshake"),
    ]
    # The catalog's own single-node SSL_do_handshake path is a different path, kept once.
    assert sum(1 for p in fmap.expected_paths if p.path_id.startswith("catalog/")) == 1
    assert static[0].nodes[-1].node_hash == node_hash(libssl3, "SSL_do_handshake")
    bounded = generate_function_map(
        GenerateOptions(sbom=debian_sbom, service="s", static_analysis=path,
                        hot_functions=["crypto/SSL_do_handshake"], max_depth=3)
    )  # fmt: skip
    assert (
        len([p for p in bounded.function_map.expected_paths if p.path_id.startswith("static/")])
        == 1
    )
    assert any("max depth 3" in w for w in bounded.warnings)


def test_static_analysis_graph_errors_are_clear(debian_sbom: Path, tmp_path: Path, run_cli) -> None:
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps({"nodes": [{"id": "a", "purl": "pkg:generic/x", "symbol": "f"}],
                                 "edges": [{"from": "a", "to": "zz"}], "entrypoints": ["a"]}))  # fmt: skip
    result = run_cli("function-map", "generate", "--sbom", debian_sbom, "--service", "s",
                     "--output", tmp_path / "o.json", "--static-analysis", graph)  # fmt: skip
    assert result.exit_code == 2
    assert "edges[0].to" in result.stderr and "zz" in result.stderr
    assert not (tmp_path / "o.json").exists()


def test_cyclonedx_16_occurrence_symbols(tmp_path: Path) -> None:
    sbom = tmp_path / "app.cdx.json"
    sbom.write_text(json.dumps({
        "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
        "components": [{"type": "library", "name": "libfoo", "version": "2.1",
                        "purl": "pkg:generic/libfoo@2.1",
                        "evidence": {"occurrences": [
                            {"location": "/usr/lib/libfoo.so.2", "symbol": "foo_encrypt@@FOO_2"},
                            {"location": "/usr/lib/libfoo.so.2"}]}}],
    }))  # fmt: skip
    fmap = make_map(sbom)
    assert [(p.sink.purl, p.sink.symbol) for p in fmap.expected_paths] == [
        ("pkg:generic/libfoo@2.1", "foo_encrypt")
    ]


def test_determinism_same_bytes(debian_sbom: Path, tmp_path: Path, run_cli, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    outputs = []
    for name in ("a.json", "b.json"):
        output = tmp_path / name
        result = run_cli(
            "function-map", "generate", "--sbom", debian_sbom, "--service", "tls",
            "--hot-functions", "crypto/*", "--hot-functions", "net/*", "--build-id", "b-7",
            "--output", output,
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        outputs.append(output.read_bytes())
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])["predicate"]["generated_at"] == "2026-01-23T00:00:00.000000Z"


def test_signed_map_verifies_with_trust_root(
    debian_sbom: Path, tmp_path: Path, run_cli, test_keys
) -> None:
    output = tmp_path / "function-map.json"
    result = run_cli("function-map", "generate", "--sbom", debian_sbom, "--service", "tls",
                     "--output", output, "--sign-key", test_keys.private("function-map"))  # fmt: skip
    assert result.exit_code == 0, result.stderr
    envelope = tmp_path / "function-map.dsse.json"
    loaded = load_function_map(envelope, test_keys.trust_root)
    assert loaded.signed and loaded.signature_checked
    assert loaded.digest == load_function_map(output).digest
    unchecked = load_function_map(envelope)
    assert unchecked.signed and not unchecked.signature_checked
    # Signed by a key of another role: refused.
    other = tmp_path / "other.json"
    run_cli("function-map", "generate", "--sbom", debian_sbom, "--service", "tls",
            "--output", other, "--sign-key", test_keys.private("collector"))  # fmt: skip
    refused = run_cli("function-map", "verify", "--function-map", tmp_path / "other.dsse.json",
                      "--trust-root", test_keys.trust_root, "--observations", envelope)  # fmt: skip
    assert refused.exit_code == 1 and "function-map" in refused.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"bomFormat": "CycloneDX", "specVersion": ', "malformed JSON"),
        (b'{"spdxVersion": "SPDX-2.3"}', "not a CycloneDX SBOM"),
        (b"[1, 2]", "not a CycloneDX SBOM"),
        # Another major version (or a malformed one) was read as if it were 1.x.
        (
            b'{"bomFormat": "CycloneDX", "specVersion": "2.0", "components": []}',
            "specVersion '2.0' is not a CycloneDX 1.x version",
        ),
        (
            b'{"bomFormat": "CycloneDX", "specVersion": "1.5 ", "components": []}',
            "is not a CycloneDX 1.x version",
        ),
        # Infinity and NaN are not JSON (jsonio).
        (b'{"bomFormat": "CycloneDX", "specVersion": "1.5", "version": NaN}', "not a JSON number"),
    ],
)
def test_bad_sbom_is_a_clear_input_error(
    tmp_path: Path, run_cli, content: bytes, message: str
) -> None:
    sbom = tmp_path / "bad.json"
    sbom.write_bytes(content)
    output = tmp_path / "fm.json"
    result = run_cli(
        "function-map", "generate", "--sbom", sbom, "--service", "s", "--output", output
    )
    assert result.exit_code == 2
    assert message in result.stderr and str(sbom) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not output.exists()


def test_kernel_event_paths_use_the_kernel_purl(debian_sbom: Path, run_cli, tmp_path: Path) -> None:
    from stella_bundle.collector.plan import KERNEL_SOURCES
    from stella_bundle.formats.node_hash import KERNEL_PURL

    output = tmp_path / "fm.json"
    result = run_cli("function-map", "generate", "--sbom", debian_sbom, "--service", "s",
                     "--output", output, "--hot-functions", "file/*", "--hot-functions", "exec/*",
                     "--kernel-events", "file,exec", "--kernel-events", "net")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    fmap = load_function_map(output).function_map
    kernel = {p.sink.symbol: p for p in fmap.expected_paths if p.sink.purl == KERNEL_PURL}
    assert set(kernel) == {"openat", "execve"}  # net/* was not among the hot functions
    assert all(symbol in KERNEL_SOURCES for symbol in kernel)  # the collector can observe them
    assert kernel["openat"].tag == "file" and kernel["execve"].sink.probe_types == ("tracepoint",)
    bad = run_cli("function-map", "generate", "--sbom", debian_sbom, "--service", "s",
                  "--output", output, "--kernel-events", "disk")  # fmt: skip
    assert bad.exit_code == 2 and "--kernel-events" in bad.stderr
