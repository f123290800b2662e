"""Scope through the commands: `function-map generate --scope`, and `function-map verify` over
observation files and a sealed evidence chain counting only records of the map's workload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stella_bundle.formats.scope import NO_SCOPE_WARNING
from stella_bundle.functionmap.load import load_function_map
from tests.functionmap.functionmap_helpers import records_for, write_chain, write_ndjson

NGINX = {"executable": "/usr/sbin/nginx"}


def _generate(run_cli: Any, sbom: Path, output: Path, *scope: str) -> Any:
    options = [item for value in scope for item in ("--scope", value)]
    return run_cli(
        "function-map", "generate", "--sbom", sbom, "--service", "web", "--output", output,
        "--hot-functions", "crypto/SSL_do_handshake", *options,
    )  # fmt: skip


def _with_context(records: list[dict[str, Any]], context: dict[str, str]) -> list[dict[str, Any]]:
    return [{**r, "details": {"scope": context}} for r in records]


def test_generate_writes_the_scope_and_verify_counts_only_its_records(
    run_cli: Any, debian_sbom: Path, tmp_path: Path, test_keys: Any
) -> None:
    output = tmp_path / "fm.json"
    result = _generate(run_cli, debian_sbom, output, "executable=/usr/sbin/nginx")
    assert result.exit_code == 0, result.stderr
    assert NO_SCOPE_WARNING not in result.stderr
    fmap = load_function_map(output).function_map
    assert fmap.scope is not None and fmap.scope.to_dict() == NGINX

    every_node = records_for(fmap)
    client = _with_context(every_node, {"executable": "/usr/bin/ab"})
    unlabelled = every_node  # a host-wide collection's records: no workload context
    observations = write_ndjson(tmp_path / "obs.ndjson", client + unlabelled)
    result = run_cli(
        "function-map", "verify", "--function-map", output, "--observations", observations,
        "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 1  # nothing of nginx's own was observed
    report = json.loads(result.stdout)
    assert report["scope"] == {
        "declared": NGINX,
        "records_in_scope": 0,
        "records_out_of_scope": 2 * len(every_node),
        "findings": [
            f"{2 * len(every_node)} record(s) came from processes outside the scope "
            "(executable /usr/sbin/nginx): reported, not counted"
        ],
    }
    assert report["observation_rate"] == 0.0
    assert report["unexpected_symbols"] == []

    # The same through a sealed chain, with nginx's own records among them.
    evidence = tmp_path / "evidence"
    write_chain(
        evidence, "web", client + _with_context(every_node, NGINX), test_keys.signer("collector")
    )
    result = run_cli(
        "function-map", "verify", "--function-map", output, "--evidence", evidence / "web",
        "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["scope"]["records_in_scope"] == len(every_node)
    assert report["scope"]["records_out_of_scope"] == len(every_node)
    assert report["observation_rate"] == 1.0
    # The table names the scope and what was left out.
    table = run_cli(
        "function-map", "verify", "--function-map", output, "--evidence", evidence / "web"
    )
    assert "scope: executable /usr/sbin/nginx" in table.stdout
    assert "out of scope" in table.stdout


def test_a_map_without_scope_is_verified_host_wide_with_a_warning(
    run_cli: Any, debian_sbom: Path, tmp_path: Path
) -> None:
    output = tmp_path / "fm.json"
    result = _generate(run_cli, debian_sbom, output)
    assert result.exit_code == 0, result.stderr
    assert NO_SCOPE_WARNING in result.stderr
    fmap = load_function_map(output).function_map
    assert fmap.scope is None
    observations = write_ndjson(
        tmp_path / "obs.ndjson", _with_context(records_for(fmap), {"executable": "/usr/bin/ab"})
    )
    result = run_cli(
        "function-map", "verify", "--function-map", output, "--observations", observations,
        "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["warnings"] == [NO_SCOPE_WARNING]
    assert report["scope"]["declared"] is None
    assert f"WARNING: {NO_SCOPE_WARNING}" in result.stderr


def test_a_bad_scope_option_names_the_selector(
    run_cli: Any, debian_sbom: Path, tmp_path: Path
) -> None:
    output = tmp_path / "fm.json"
    result = _generate(run_cli, debian_sbom, output, "executable=nginx")
    assert result.exit_code == 2
    assert "scope.executable" in result.stderr and "absolute path" in result.stderr
    assert not output.exists()
    result = _generate(run_cli, debian_sbom, output, "pod=web-0")
    assert result.exit_code == 2 and "scope.pod" in result.stderr


def test_the_store_counts_scope_like_the_files(
    run_cli: Any, debian_sbom: Path, tmp_path: Path, test_keys: Any
) -> None:
    import datetime as dt

    from stella_bundle.coverage import VerifyOptions, verify_observations
    from stella_bundle.coverage.inputs import iter_evidence_records
    from stella_bundle.formats.trust_root import TrustRoot
    from stella_bundle.store import ingest_evidence, open_store, verify_stored

    output = tmp_path / "fm.json"
    assert _generate(run_cli, debian_sbom, output, "executable=/usr/sbin/nginx").exit_code == 0
    loaded = load_function_map(output)
    every_node = records_for(loaded.function_map)
    late = [{**r, "observed_at": "2026-01-24T00:10:00.000000Z"} for r in every_node]
    evidence = tmp_path / "evidence"
    write_chain(
        evidence,
        "web",
        _with_context(every_node, {"executable": "/usr/bin/ab"})
        + _with_context(every_node[:1], NGINX)
        + _with_context(late, NGINX),
        test_keys.signer("collector"),
    )
    with open_store(f"sqlite:///{tmp_path / 's.sqlite'}", initialise=True) as store:
        ingest_evidence(store, evidence, TrustRoot.load(test_keys.trust_root))
        for window_to in (None, dt.datetime(2026, 1, 23, 12, tzinfo=dt.UTC)):
            options = VerifyOptions(window_to=window_to)
            expected = verify_observations(
                loaded, iter_evidence_records(evidence / "web"), options, validated=True
            )
            actual = verify_stored(store, loaded, options)
            assert actual.to_dict() == expected.to_dict()
            assert actual.scope["records_out_of_scope"] == len(every_node)
