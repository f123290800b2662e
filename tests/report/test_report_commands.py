"""Each command that prints a result prints its typed model through the registry: the JSON is
the model's to_dict and reads back through from_dict; the table names the key figures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from report_support import (
    Inputs,
    assert_self_contained,
    page_text,
    parse,
    write_bundle,
    write_sbom,
)

from stella_bundle.errors import InputError, MalformedDocumentError
from stella_bundle.report import kinds
from stella_bundle.report.registry import ResultKind, render

EXAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "schemas" / "examples"
SIGSTORE_ROOT = (
    Path(__file__).resolve().parents[1]
    / "data/external/sigstore-conformance/bundle-verify/rekor2-timestamp-with-embedded-cert"
    / "trusted_root.json"
)
TETRAGON = Path(__file__).resolve().parents[1] / "data" / "external" / "tetragon" / "examples"


@dataclass(frozen=True)
class Case:
    args: Callable[[Inputs, Any], list[str | Path]]
    kind: ResultKind
    exit_code: int
    figures: tuple[str, ...]  # what the table must name


def _stored(inputs: Inputs, keys: Any) -> str:
    """A SQLite store holding the inputs' chain (for the retention command)."""
    from stella_bundle.formats.trust_root import TrustRoot
    from stella_bundle.store import ingest_evidence, open_store

    path = inputs.evidence.parent / "stored.db"
    url = f"sqlite:///{path}"
    if not path.exists():
        with open_store(url, initialise=True) as store:
            ingest_evidence(store, inputs.evidence, TrustRoot.load(keys.trust_root))
    return url


def _tokens(inputs: Inputs) -> Path:
    from stella_bundle.api.tokens import TokenFile

    path = inputs.evidence.parent / "tokens.json"
    if not path.exists():
        tokens = TokenFile(path=path)
        tokens.add("ci", ["read"])
        tokens.add("ops", ["write", "read"])
        tokens.save(path)
    return path


def _signed_map(inputs: Inputs, keys: Any) -> Path:
    """The inputs' function map signed by the function-map role's key."""
    from stella_bundle.attest.signing import sign_to_file, statement_for_document

    path = inputs.evidence.parent / "function-map.dsse.json"
    if not path.exists():
        statement = statement_for_document(inputs.function_map, "https://stella.ops/x/v1")
        sign_to_file(statement, [keys.signer("function-map")], path)
    return path


def _fresh(inputs: Inputs, stem: str, suffix: str = "") -> Path:
    """A path not used before in this module's directory (the cases run each command twice)."""
    directory = inputs.evidence.parent / "written"
    directory.mkdir(exist_ok=True)
    return directory / f"{stem}-{len(list(directory.glob(f'{stem}-*')))}{suffix}"


def _fresh_directory(inputs: Inputs, stem: str) -> Path:
    directory = _fresh(inputs, stem)
    directory.mkdir()
    return directory


def _trust_root_copy(inputs: Inputs, keys: Any) -> Path:
    copy = _fresh(inputs, "trust-root", ".json")
    copy.write_bytes(Path(keys.trust_root).read_bytes())
    return copy


def _map_signed_beside(inputs: Inputs, keys: Any) -> Path:
    """The inputs' function map with its signed envelope beside it (what a bundle carries)."""
    write_bundle(inputs, keys.signer("function-map"), keys.signer("builder"))
    return inputs.function_map


def _split_index(inputs: Inputs, keys: Any) -> Path:
    from stella_bundle.bundle.media import split_bundle

    bundle = write_bundle(inputs, keys.signer("function-map"), keys.signer("builder"))
    index = bundle.parent / f"{bundle.name}.parts.json"
    if not index.exists():
        split_bundle(bundle, 4096)
    return index


def _removal(inputs: Inputs) -> list[str | Path]:
    path, name = _token_to_remove(inputs)
    return [path, "--name", name]


def _token_to_remove(inputs: Inputs) -> tuple[Path, str]:
    from stella_bundle.api.tokens import TokenFile

    path = _tokens(inputs)
    tokens = TokenFile.load(path)
    name = f"gone-{len(tokens.entries)}"
    tokens.add(name, ["read"])
    tokens.save(path)
    return path, name


CASES = {
    "signals verify-chain": Case(
        lambda i, keys: ["signals", "verify-chain", i.evidence, "--trust-root", keys.trust_root],
        kinds.CHAINS,
        0,
        ("chain chain-a  PASSED", "chunks 3  records 23", "final seal yes", "signatures verified"),
    ),
    "signals status": Case(
        lambda i, _: ["signals", "status", i.evidence],
        kinds.STATUSES,
        0,
        ("chain chain-a", "head 3", "sealed chunks 3  records 23", "events lost 0"),
    ),
    "signals inspect": Case(
        lambda i, _: ["signals", "inspect", "2", "--chain", i.evidence / "chain-a", "--limit", "3"],
        kinds.INSPECTION,
        0,
        ("seal 0000000002.seal.dsse.json", "sequence 2  reason size", "3 of 8 records shown"),
    ),
    "signals prune": Case(
        lambda i, keys: [
            "signals",
            "prune",
            i.evidence,
            "--older-than",
            "0s",
            "--key",
            keys.private("collector"),
            "--dry-run",
        ],
        kinds.PRUNES,
        0,
        ("chain chain-a: would remove sequences 1-2 (2 chunks, 16 records",),
    ),
    "function-map generate": Case(
        lambda i, keys: [
            "function-map",
            "generate",
            "--sbom",
            write_sbom(i.evidence.parent),
            "--service",
            "report-svc",
            "--output",
            i.evidence.parent / "generated.json",
            "--sign-key",
            keys.private("function-map"),
        ],
        kinds.MAP_WRITTEN,
        0,
        ("function map for report-svc:", "paths", "nodes (catalog", "(signed: "),
    ),
    "observations import": Case(
        lambda i, keys: [
            "observations",
            "import",
            i.observations,
            "--target",
            i.evidence.parent / "imported",
            "--key",
            keys.private("collector"),
            "--chain-id",
            f"imp-{len(list(i.evidence.parent.glob('imported/*')))}",
        ],
        kinds.IMPORT,
        0,
        ("imported 23 records into chain imp-",),
    ),
    "observations ingest": Case(
        lambda i, keys: [
            "observations",
            "ingest",
            "--evidence",
            i.evidence,
            "--trust-root",
            keys.trust_root,
            "--store",
            f"sqlite:///{i.evidence.parent / 'store.db'}",
        ],
        kinds.STORE_INGEST,
        0,
        ("chunk(s)", "record(s) stored", "already stored"),
    ),
    "observations prune": Case(
        lambda i, keys: [
            "observations",
            "prune",
            "--older-than",
            "1h",
            "--store",
            _stored(i, keys),
        ],
        kinds.STORE_PRUNE,
        0,
        ("record(s) before", "removed"),
    ),
    "store init": Case(
        lambda i, _: ["store", "init", "--store", f"sqlite:///{i.evidence.parent / 'new.db'}"],
        kinds.STORE_INIT,
        0,
        ("store sqlite:", "initialised", "schema version"),
    ),
    "store migrate": Case(
        lambda i, keys: ["store", "migrate", "--store", _stored(i, keys)],
        kinds.STORE_MIGRATE,
        0,
        ("store sqlite:", "up to date (schema version"),
    ),
    "store status": Case(
        lambda i, keys: ["store", "status", "--store", _stored(i, keys)],
        kinds.STORE_STATUS,
        0,
        ("backend: sqlite", "pending_migrations: none", "records: 23", "chains: 1"),
    ),
    "keys fingerprint": Case(
        lambda _, keys: ["keys", "fingerprint", keys.public("auditor")],
        kinds.FINGERPRINT,
        0,
        ("keyid:", "keytype:", "fingerprint_sha256:"),
    ),
    "trust-root show": Case(
        lambda _, keys: ["trust-root", "show", keys.trust_root],
        kinds.TRUST_ROOT,
        0,
        ("trust root ", "(valid)", "collector", "fingerprint: "),
    ),
    "bundle inspect": Case(
        lambda i, keys: [
            "bundle",
            "inspect",
            write_bundle(i, keys.signer("function-map"), keys.signer("builder")),
        ],
        kinds.BUNDLE_CLAIMS,
        0,
        ("NOT VERIFIED", "services report-svc", "chains (not verified)", "chain-a"),
    ),
    "serve token list": Case(
        lambda i, _: ["serve", "token", "list", "--tokens", _tokens(i)],
        kinds.TOKENS,
        0,
        ("ci  read  ", "ops  write,read  "),
    ),
    "tetragon policy": Case(
        lambda i, _: [
            "tetragon",
            "policy",
            "--function-map",
            i.function_map,
            "--output",
            i.evidence.parent / "policy.yaml",
        ],
        kinds.POLICY,
        0,
        ("wrote TracingPolicy stella-report-svc with 0 probes",),
    ),
    "probes list": Case(
        lambda _, __: ["probes", "list"],
        kinds.PROBES,
        0,
        ("probe set ", "object", "ok"),
    ),
    "schema list": Case(
        lambda _, __: ["schema", "list"],
        kinds.SCHEMAS,
        0,
        ("observation-record", "observation-record.schema.json", "function-map"),
    ),
    "schema validate": Case(
        lambda _, __: ["schema", "validate", EXAMPLES / "dsse-envelope.json"],
        kinds.SCHEMA_VALIDATION,
        0,
        ("valid ", "dsse-envelope.json: ", "in a DSSE envelope (signatures not checked)"),
    ),
    "probes doctor": Case(
        lambda _, __: ["probes", "doctor"],
        kinds.DOCTOR,
        0,
        ("kernel features", "attach types (each tried", "probe categories", "uprobe", "libbpf"),
    ),
    "attest verify": Case(
        lambda i, keys: [
            "attest",
            "verify",
            _signed_map(i, keys),
            "--trust-root",
            keys.trust_root,
            "--role",
            "function-map",
        ],
        kinds.ATTESTATION,
        0,
        (
            "VERIFIED ",
            "function-map.dsse.json (https://stella.ops/x/v1, role function-map)",
            "function-map.json",
            "signed by ",
        ),
    ),
    "tetragon ingest": Case(
        lambda i, keys: [
            "tetragon",
            "ingest",
            TETRAGON / "events.json",
            TETRAGON / "process_connect.json",
            "--target",
            i.evidence.parent / "bridged",
            "--key",
            keys.private("collector"),
            "--chain-id",
            f"tg-{len(list(i.evidence.parent.glob('bridged/*')))}",
        ],
        kinds.TETRAGON_INGEST,
        0,
        ("ingested ", " events into chain tg-", "1 not recorded", "not recorded: unknown"),
    ),
    "observations query": Case(
        lambda i, _: ["observations", "query", "--observations", i.observations, "--limit", "5"],
        kinds.RECORDS,
        0,
        ("Observations (5)", "2026-01-23T10:01:00.000000Z", "fn_1", "kprobe", "report-svc"),
    ),
    "observations query --summary": Case(
        lambda i, _: ["observations", "query", "--evidence", i.evidence, "--summary"],
        kinds.SYMBOLS,
        0,
        ("Observed symbols (11)", "fn_11", "stray_[bold]x", "kprobe, tracepoint, uprobe"),
    ),
    "observations timeline": Case(
        lambda i, _: ["observations", "timeline", "--observations", i.observations],
        kinds.TIMELINE,
        0,
        ("Timeline (23 events)", "2026-01-23T10:30:00.000000Z", "stray_[bold]x"),
    ),
    "tetragon hot-symbols": Case(
        lambda i, _: ["tetragon", "hot-symbols", "--evidence", i.evidence, "--window", "600"],
        kinds.HOT_SYMBOLS,
        0,
        ("Hot symbols (11)", "fn_11", "Per 600 s window", "2026-01-23T10:00:00.000000Z"),
    ),
    "keys generate": Case(
        lambda i, _: ["keys", "generate", "--out", i.evidence.parent / "generated", "--force"],
        kinds.KEY_GENERATED,
        0,
        ("private key: ", "generated.key (mode 0600)", "keyid:       ", "fingerprint: "),
    ),
    "trust-root init": Case(
        lambda i, _: ["trust-root", "init", "--output", _fresh(i, "root", ".json"), "--days", "9"],
        kinds.TRUST_ROOT_WRITTEN,
        0,
        (
            "wrote ",
            ".json (expires 20",
        ),
    ),
    "trust-root add-key": Case(
        lambda i, keys: [
            "trust-root",
            "add-key",
            _trust_root_copy(i, keys),
            "--key",
            keys.public("auditor"),
            "--role",
            "builder",
        ],
        kinds.TRUST_ROOT_WRITTEN,
        0,
        ("added ", " to builder in ", "trust-root-"),
    ),
    "trust-root set-sigstore": Case(
        lambda i, keys: [
            "trust-root",
            "set-sigstore",
            _trust_root_copy(i, keys),
            "--trusted-root",
            SIGSTORE_ROOT,
            "--identity",
            "ci@example.org",
            "--issuer",
            "https://issuer.example.org",
        ],
        kinds.TRUST_ROOT_WRITTEN,
        0,
        ("embedded ", "trusted_root.json with 1 identities in ", "trust-root-"),
    ),
    "attest sign": Case(
        lambda i, keys: [
            "attest",
            "sign",
            "--input",
            i.function_map,
            "--predicate-type",
            "https://stella.ops/x/v1",
            "--key",
            keys.private("function-map"),
            "--output",
            _fresh(i, "signed", ".dsse.json"),
        ],
        kinds.STATEMENT_SIGNED,
        0,
        ("signed ", " as https://stella.ops/x/v1 by ", ".dsse.json"),
    ),
    "bundle build": Case(
        lambda i, keys: [
            "bundle",
            "build",
            "--function-map",
            _map_signed_beside(i, keys),
            "--evidence",
            i.evidence,
            "--key",
            keys.private("builder"),
            "--output",
            _fresh(i, "built", ".stella.bundle.tgz"),
        ],
        kinds.BUNDLE_BUILT,
        0,
        ("built ", " bytes, sha256 ", "services report-svc", "1 chain(s), 23 records"),
    ),
    "bundle split": Case(
        lambda i, keys: [
            "bundle",
            "split",
            write_bundle(i, keys.signer("function-map"), keys.signer("builder")),
            "--part-size",
            "4096",
            "--output-dir",
            _fresh_directory(i, "parts"),
        ],
        kinds.BUNDLE_SPLIT,
        0,
        (" part(s) of at most 4096 bytes; index ", ".parts.json"),
    ),
    "bundle join": Case(
        lambda i, keys: [
            "bundle",
            "join",
            _split_index(i, keys),
            "--output",
            _fresh(i, "joined", ".stella.bundle.tgz"),
        ],
        kinds.BUNDLE_JOINED,
        0,
        ("joined ", " part(s) into ", " bytes, sha256 ", "verified earlier"),
    ),
    "serve token add": Case(
        lambda i, _: [
            "serve",
            "token",
            "add",
            "--tokens",
            _fresh(i, "tokens", ".json"),
            "--name",
            "ci",
            "--scope",
            "read",
        ],
        kinds.TOKEN_ISSUED,
        0,
        ("stella_",),
    ),
    "serve token remove": Case(
        lambda i, _: ["serve", "token", "remove", "--tokens", *_removal(i)],
        kinds.TOKEN_REMOVED,
        0,
        ("removed token gone-", "tokens.json", "until restarted"),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_json_is_the_model_and_table_names_the_figures(
    name: str, run_cli: Any, inputs: Inputs, test_keys: Any, tmp_path: Path
) -> None:
    case = CASES[name]
    args = case.args(inputs, test_keys)
    as_json = run_cli(*args, "--format", "json")
    assert as_json.exit_code == case.exit_code, as_json.stderr
    document = parse(as_json.stdout)
    model = case.kind.model_class().from_dict(document, "stdout")
    assert model.to_dict() == document
    assert render(model, "json", case.kind) == as_json.stdout
    # Built again: an import names a new chain each time. The terminal is 80 wide here.
    table = run_cli(*case.args(inputs, test_keys))
    assert table.exit_code == case.exit_code, table.stderr
    assert case.figures[0] in table.stdout
    plain = render(model, "table", case.kind)  # the same view, 160 columns, no colour
    for figure in case.figures:
        assert figure in plain, figure
    page = render(model, "html", case.kind)  # the same view as one self-contained page
    assert_self_contained(page)
    text = page_text(page)
    assert text.startswith(case.kind.name[:1].upper() + case.kind.name[1:])
    for figure in case.figures:
        assert figure in text, figure


@pytest.mark.parametrize("name", sorted(CASES))
def test_from_dict_refuses_an_unknown_field(
    name: str, run_cli: Any, inputs: Inputs, test_keys: Any
) -> None:
    case = CASES[name]
    document = parse(run_cli(*case.args(inputs, test_keys), "--format", "json").stdout)
    model = case.kind.model_class()
    if name == "store status":  # open by design: each backend adds its own details
        with pytest.raises(InputError, match="records"):
            model.from_dict({**document, "records": "many"}, "stdout")
        return
    with pytest.raises(InputError):
        model.from_dict({**document, "surprise": 1}, "stdout")
    # One level down too, where the entries are typed (a chunk's records are shown raw).
    lists = [v for v in document.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
    if lists and name != "signals inspect":
        lists[0][0]["surprise"] = 1
        with pytest.raises(InputError, match="surprise"):
            model.from_dict(document, "stdout")


def test_a_chain_report_whose_totals_disagree_is_refused(
    run_cli: Any, inputs: Inputs, test_keys: Any
) -> None:
    args = CASES["signals verify-chain"].args(inputs, test_keys)
    document = parse(run_cli(*args, "--format", "json").stdout)
    document["chains"][0]["records"] += 1
    with pytest.raises(MalformedDocumentError, match=r"chains\[0\]\.records"):
        kinds.CHAINS.model_class().from_dict(document)
    document["chains"][0]["records"] -= 1
    document["passed"] = False
    with pytest.raises(MalformedDocumentError, match="passed"):
        kinds.CHAINS.model_class().from_dict(document)


def test_a_refused_schema_validation_is_json_on_stdout_and_one_line_on_stderr(
    run_cli: Any, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"x": 1}\n')
    as_json = run_cli("schema", "validate", bad, "--format", "json")
    assert as_json.exit_code == 2
    assert as_json.stderr.count("\n") == 1 and "bad.ndjson:1: field 'node_hash'" in as_json.stderr
    document = parse(as_json.stdout)
    assert document["valid"] is False and document["line"] == 1
    assert document["error"] == "SchemaValidationError"
    model = kinds.SCHEMA_VALIDATION.model_class().from_dict(document, "stdout")
    assert model.to_dict() == document
    assert render(model, "json", kinds.SCHEMA_VALIDATION) == as_json.stdout
    assert f"invalid {bad}: " in render(model, "table", kinds.SCHEMA_VALIDATION)
    # People read the error line: nothing on stdout.
    table = run_cli("schema", "validate", bad)
    assert (table.exit_code, table.stdout, table.stderr) == (2, "", as_json.stderr)
    with pytest.raises(MalformedDocumentError, match=r"refusal\.surprise"):
        kinds.SCHEMA_VALIDATION.model_class().from_dict({**document, "surprise": 1})
    accepted = parse(
        run_cli("schema", "validate", EXAMPLES / "statement.json", "--format", "json").stdout
    )
    with pytest.raises(MalformedDocumentError, match="container"):
        kinds.SCHEMA_VALIDATION.model_class().from_dict({**accepted, "container": "zip"})


def test_a_doctor_report_naming_another_errno_or_an_unknown_field_is_refused(
    run_cli: Any,
) -> None:
    document = parse(run_cli("probes", "doctor", "--format", "json").stdout)
    model = kinds.DOCTOR.model_class()
    trial = document["attach_types"]["uprobe"]
    trial.update(errno=1, errno_name="EACCES")
    with pytest.raises(MalformedDocumentError, match=r"attach_types\.uprobe\.errno_name"):
        model.from_dict(document, "stdout")
    trial.update(errno_name="EPERM")
    assert model.from_dict(document).to_dict() == document
    document["categories"]["file"]["surprise"] = 1
    with pytest.raises(MalformedDocumentError, match=r"categories\.file\.surprise"):
        model.from_dict(document, "stdout")


def test_a_refused_attestation_is_json_on_stdout_and_one_line_on_stderr(
    run_cli: Any, inputs: Inputs, test_keys: Any
) -> None:
    args = CASES["attest verify"].args(inputs, test_keys)
    as_json = run_cli(*args[:-1], "builder", "--format", "json")
    assert as_json.exit_code != 0 and as_json.stderr.count("\n") == 1
    document = parse(as_json.stdout)
    assert document["verified"] is False and document["message"] in as_json.stderr
    model = kinds.ATTESTATION.model_class().from_dict(document, "stdout")
    assert model.to_dict() == document
    assert "NOT VERIFIED: " in render(model, "table", kinds.ATTESTATION)
    table = run_cli(*args[:-1], "builder")
    assert (table.exit_code, table.stdout, table.stderr) == (as_json.exit_code, "", as_json.stderr)
    verified = parse(run_cli(*args, "--format", "json").stdout)
    verified["subjects"][0] = "f"
    with pytest.raises(MalformedDocumentError, match=r"subjects\[0\]"):
        kinds.ATTESTATION.model_class().from_dict(verified)


def test_a_disabled_bridge_says_so_in_each_format(run_cli: Any, tmp_path: Path) -> None:
    config = tmp_path / "stellaops.yaml"
    config.write_text("tetragon:\n  enabled: false\n")
    args = ["tetragon", "ingest", TETRAGON / "events.json", "--config", config]
    as_json = run_cli(*args, "--format", "json")
    assert as_json.exit_code == 0 and parse(as_json.stdout) == {"enabled": False, "records": 0}
    model = kinds.TETRAGON_INGEST.model_class().from_dict(parse(as_json.stdout))
    assert render(model, "json", kinds.TETRAGON_INGEST) == as_json.stdout
    table = run_cli(*args)
    assert "the Tetragon bridge is disabled" in table.stdout
    with pytest.raises(MalformedDocumentError, match=r"ingest\.enabled"):
        kinds.TETRAGON_INGEST.model_class().from_dict({"enabled": True, "records": 0})


def test_json_output_does_not_import_rich(inputs: Inputs) -> None:
    """Rich's console is made for a table only: `--format json` spends none of its imports."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from stella_bundle.cli import main\n"
        f"code = main(['function-map', 'verify', '--function-map', {str(inputs.function_map)!r}, "
        f"'--observations', {str(inputs.observations)!r}, '--format', 'json'])\n"
        "assert code in (0, 1), code\n"
        "assert 'rich.console' not in sys.modules, 'rich imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert parse(result.stdout)["per_path_breakdown"]
