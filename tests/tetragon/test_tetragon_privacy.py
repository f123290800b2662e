"""The privacy filter: stack addresses, argument values and secrets in argv and paths never
reach a chunk or a report; what was removed is counted in the seal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from tetragon_support import APP, TetragonProto, exec_event, kprobe, shop_map, to_line, uprobe

from tests.conftest import scaled_examples

SECRETS = ("hunter2-very-secret", "s3cr3t-token-value", "AKIAIOSFODNN7EXAMPLE", "pa55word")
ADDRESSES = (18446744072637310040, 140737349812345, 94251234567890)


def hostile_events(pb: TetragonProto) -> list[Any]:
    tetragon = pb.tetragon
    kernel_stack = [
        tetragon.StackTraceEntry(address=ADDRESSES[0], offset=114, symbol="do_sys_openat2"),
    ]
    user_stack = [
        tetragon.StackTraceEntry(
            address=ADDRESSES[1], offset=0x2A1B0, symbol="__libc_connect", module="/lib/libc.so.6"
        ),
        tetragon.StackTraceEntry(address=ADDRESSES[2], offset=0x10, module=APP),
    ]
    secret_arg = tetragon.KprobeArgument(string_arg=SECRETS[1], label="token")
    allowed_arg = tetragon.KprobeArgument(
        string_arg=f"https://admin:{SECRETS[3]}@db.internal/x", label="url"
    )
    address_arg = tetragon.KprobeArgument(size_arg=ADDRESSES[1], label="buffer")
    return [
        exec_event(
            pb,
            binary=APP,
            arguments=f"--db-password={SECRETS[0]} --listen :8080 --key {SECRETS[2]}",
        ),
        kprobe(
            pb,
            "tcp_connect",
            stack=kernel_stack,
            user_stack=user_stack,
            args=[secret_arg, allowed_arg, address_arg],
        ),
        uprobe(pb, APP, "checkout", args=[secret_arg]),
        exec_event(pb, binary=f"/tmp/token={SECRETS[1]}/run", arguments="plain"),
    ]


def test_no_address_or_secret_survives_into_chunks_or_report(
    tmp_path: Path, tetragon_pb: TetragonProto, test_keys: Any, run_cli: Any
) -> None:
    fm_path = tmp_path / "fm.json"
    shop_map(fm_path)
    export = tmp_path / "t.log"
    export.write_bytes(b"".join(to_line(m) for m in hostile_events(tetragon_pb)))
    raw = export.read_text()
    assert all(s in raw for s in SECRETS) and all(str(a) in raw for a in ADDRESSES)
    config = tmp_path / "stellaops.yaml"
    config.write_text("tetragon:\n  privacy:\n    allow_arguments: [url]\n")
    evidence = tmp_path / "evidence"
    result = run_cli(
        "tetragon", "ingest", export, "--function-map", fm_path, "--target", evidence,
        "--key", test_keys.private("collector"), "--config", config, "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["records"] == 4
    (chain,) = [p for p in evidence.iterdir() if p.is_dir()]
    chunks = b"".join(
        zstandard.ZstdDecompressor().decompressobj().decompress(p.read_bytes())
        for p in sorted(chain.glob("*.ndjson.zst"))
    ).decode()
    seals_text = "".join(p.read_text() for p in chain.glob("*.seal.dsse.json"))
    timeline = run_cli("observations", "timeline", "--evidence", evidence, "--format", "json")
    report = run_cli(
        "function-map",
        "verify",
        "--function-map",
        fm_path,
        "--evidence",
        evidence,
        "--format",
        "json",
    )
    for text in (chunks, seals_text, result.stdout, result.stderr, timeline.stdout, report.stdout):
        for secret in SECRETS:
            assert secret not in text
        for address in ADDRESSES:
            assert str(address) not in text
            assert f"{address:x}" not in text
    records = [json.loads(line) for line in chunks.splitlines()]
    kprobe_record = next(r for r in records if r["probe_type"] == "kprobe")
    details = kprobe_record["details"]
    assert details["user_stack"] == [
        {"module": "/lib/libc.so.6", "offset": "0x2a1b0", "symbol": "__libc_connect"},
        {"module": APP, "offset": "0x10"},
    ]
    assert details["kernel_stack"] == [
        {"module": "[kernel]", "offset": "0x72", "symbol": "do_sys_openat2"}
    ]
    assert details["args"] == [
        {"string_arg": "https://admin:[REDACTED]@db.internal/x", "label": "url"}
    ]
    exec_record = next(r for r in records if r["kind"] == "exec")
    assert exec_record["details"]["arguments"] == (
        "--db-password=[REDACTED] --listen :8080 --key [REDACTED]"
    )
    redacted = summary["redacted"]
    assert redacted["redacted.address"] == 3
    assert redacted["redacted.argument"] == 3  # token (twice) and buffer
    assert redacted["redacted.argv"] == 2
    assert redacted["redacted.path"] >= 1
    assert redacted["redacted.argument_value"] == 1
    (seal,) = [json.loads(p.read_text()) for p in chain.glob("*.seal.dsse.json")]
    assert seal["signatures"]
    from stella_bundle.evidence.seal import parse_seal

    (seal_path,) = chain.glob("*.seal.dsse.json")
    by_reason = parse_seal(seal_path.read_bytes()).predicate.loss.by_reason
    assert by_reason["redacted.address"] == 3
    assert by_reason["redacted.argv"] == 2


def test_policy_config_errors_name_the_key(tmp_path: Path, run_cli: Any, test_keys: Any) -> None:
    config = tmp_path / "stellaops.yaml"
    config.write_text("tetragon:\n  privacy:\n    redact_patterns: ['([unclosed']\n")
    export = tmp_path / "t.log"
    export.write_text("")
    result = run_cli(
        "tetragon", "ingest", export, "--target", tmp_path / "e", "--key",
        test_keys.private("collector"), "--config", config,
    )  # fmt: skip
    assert result.exit_code == 2
    assert "tetragon.privacy.redact_patterns[0]" in result.stderr


# No lower case, no space: a secret can only be found where it was put.
_SECRET_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%*+,-./:;<>?@^_~"


@settings(max_examples=scaled_examples(60), deadline=None)
@given(
    secret=st.text(alphabet=_SECRET_ALPHABET, min_size=6, max_size=40),
    option=st.sampled_from(["--password=", "--token ", "api_key=", "secret: ", "-passwd "]),
    before=st.text(alphabet="abc ", max_size=20),
    after=st.text(alphabet="xyz ", max_size=20),
)
def test_secret_options_never_survive_redaction(
    secret: str, option: str, before: str, after: str
) -> None:
    from stella_bundle.tetragon.privacy import PrivacyFilter

    privacy = PrivacyFilter()
    argv = f"{before} {option}{secret} {after}"
    redacted = privacy.redact_text(argv, "argv")
    assert secret not in redacted
    assert privacy.counts["redacted.argv"] >= 1
