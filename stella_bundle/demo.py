"""The end-to-end demo behind the README's first command (`just demo` → `stella demo`).

In a temporary workspace: demo keys and a trust root → a function map for the fixture workload
(C, OpenSSL) → a few seconds of real eBPF collection (recorded observations when eBPF is not
available here, said plainly) → bundle build → split → join → offline verification with the
report on screen → where the JSON and HTML reports are.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .attest.keys import generate_key, load_signer
from .attest.signing import sign_to_file
from .bundle.build import build_bundle
from .bundle.media import join_parts, split_bundle
from .canonical import canonical_bytes
from .errors import InternalError
from .evidence.config import WriterConfig
from .evidence.writer import ChunkWriter
from .formats.roles import ROLES, RoleName
from .formats.seal import CollectorInfo
from .formats.trust_root import TrustRoot
from .functionmap.generate import GenerateOptions, generate_function_map
from .report import report_renderable, write_reports
from .timeutil import utc_now
from .verify import verify_bundle

# Package data (in the wheel): the demo runs from an installed stella as from a clone.
DEMO_DATA = Path(__file__).resolve().parent / "demo_data"
WORKLOAD_SOURCE = DEMO_DATA / "workload.c"
RECORDED_OBSERVATIONS = DEMO_DATA / "recorded-observations.ndjson"
RECORDED_FUNCTION_MAP = DEMO_DATA / "recorded-function-map.json"
LIBCRYPTO = Path("/usr/lib/x86_64-linux-gnu/libcrypto.so.3")
WORKLOAD_PURL = "pkg:generic/stella-workload@1.0.0"
OPENSSL_PURL = "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64"
HOT_FUNCTIONS = ["stella_work_parse", "stella_work_hot", "stella_work_never", "EVP_Digest"]
OPTIONAL = ["stella_work_never"]  # a path the workload never takes: shown as missing, optional
COLLECT_SECONDS = 2.0
PART_SIZE = 16 * 1024
CHAIN_ID = "demo-workload"

Say = Callable[[str], None]
Show = Callable[[Any], None]


@dataclass
class DemoResult:
    workspace: Path
    bundle: Path
    report_json: Path
    report_html: Path
    report_envelope: Path | None
    exit_code: int
    live_collection: bool


def _sbom() -> dict[str, Any]:
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "metadata": {
            "component": {
                "type": "application",
                "name": "stella-workload",
                "version": "1.0.0",
                "purl": WORKLOAD_PURL,
                "bom-ref": "workload",
            }
        },
        "components": [
            {
                "type": "application",
                "name": "stella-workload",
                "version": "1.0.0",
                "purl": WORKLOAD_PURL,
                "bom-ref": "workload-binary",
            },
            {
                "type": "library",
                "name": "libssl3",
                "version": "3.0.11-1~deb12u2",
                "purl": OPENSSL_PURL,
                "bom-ref": "libssl3",
            },
        ],
    }


def build_workload(directory: Path) -> Path | None:
    """Compile the fixture workload; None when no compiler or OpenSSL headers are present."""
    if shutil.which("gcc") is None or not LIBCRYPTO.exists():
        return None
    binary = directory / "stella-workload"
    done = subprocess.run(
        ["gcc", "-O2", "-g", "-o", str(binary), str(WORKLOAD_SOURCE), "-lcrypto"],
        capture_output=True,
        text=True,
    )
    return binary if done.returncode == 0 else None


def ebpf_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "not running as root"
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return "the kernel exposes no BTF (/sys/kernel/btf/vmlinux)"
    if not Path("/sys/kernel/tracing/events").is_dir():
        return "tracefs is not mounted at /sys/kernel/tracing (scripts/setup.sh mounts it)"
    return None


def collect_live(
    workload: Path, function_map: Path, evidence: Path, collector_key: Path
) -> tuple[bool, str]:
    """Run the real collector (`stella signals start`) over the workload; (ok, detail)."""
    work = subprocess.Popen(
        [str(workload), "--wait", "--crypto", "--calls", "100000"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert work.stdin is not None and work.stdout is not None
    try:
        ready = work.stdout.readline().split()
        if len(ready) != 2 or ready[0] != "ready":
            return False, "the workload did not start"
        collector = subprocess.Popen(
            [
                sys.executable, "-m", "stella_bundle", "signals", "start",
                "--function-map", str(function_map), "--target", str(evidence),
                "--key", str(collector_key), "--pid", ready[1], "--chain-id", CHAIN_ID,
                "--duration", str(COLLECT_SECONDS), "--quiet",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert collector.stderr is not None
        banner = collector.stderr.readline().strip()
        if not banner.startswith("collecting:"):
            out, err = collector.communicate(timeout=60)
            return False, (banner + " " + err).strip() or f"collector exited {collector.returncode}"
        work.stdin.write("go\n")
        work.stdin.flush()
        work.stdout.readline()
        out, err = collector.communicate(timeout=60)
        if collector.returncode != 0:
            return False, err.strip() or f"collector exited {collector.returncode}"
        return True, banner + "; " + out.strip().splitlines()[-1]
    finally:
        if work.poll() is None:
            work.kill()
        work.wait()


def replay_recorded(evidence: Path, collector_key: Path) -> int:
    """Write the recorded observations as a sealed chain with the real evidence writer."""
    records = [
        json.loads(line) for line in RECORDED_OBSERVATIONS.read_text().splitlines() if line.strip()
    ]
    writer = ChunkWriter.open(
        evidence,
        CHAIN_ID,
        load_signer(collector_key),
        WriterConfig(),
        CollectorInfo(
            "stella-demo-replay", "recorded", None, "replay of stella_bundle/demo_data", None
        ),
    )
    with writer:
        for record in records:
            writer.append(record)
    return len(records)


def run_demo(
    workspace: Path | None = None,
    say: Say = print,
    show: Show | None = None,
    *,
    force_recorded: bool = False,
) -> DemoResult:
    """Run the whole flow; returns where everything is. Raises only on our own failures."""
    show = show or (lambda renderable: say(str(renderable)))
    started = time.monotonic()
    root = workspace or Path(tempfile.mkdtemp(prefix="stella-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    say(f"workspace: {root}")

    def step(text: str) -> None:
        say(f"[{time.monotonic() - started:5.1f}s] {text}")

    # 1. keys and a trust root (the auditor brings it to the air-gapped side out of band).
    keys_dir = root / "keys"
    keys_dir.mkdir(exist_ok=True)
    trust_root = TrustRoot(expires=utc_now() + dt.timedelta(days=30))
    for role in ROLES:
        generated = generate_key("ed25519", keys_dir / f"{role}-TEST-ONLY", None)
        trust_root.add_key(generated.public_key, [role])
    trust_root_path = root / "trust-root.json"
    trust_root.save(trust_root_path)
    step(f"1. demo keys (TEST ONLY) for {', '.join(ROLES)} and trust root {trust_root_path}")

    def key(role: str) -> Path:
        return keys_dir / f"{role}-TEST-ONLY.key"

    # 2. the workload and its function map.
    connected = root / "connected-side"
    connected.mkdir(exist_ok=True)
    workload = build_workload(connected)
    sbom = connected / "stella-workload.cdx.json"
    sbom.write_bytes(canonical_bytes(_sbom()))
    if workload is not None:
        generated_map = generate_function_map(
            GenerateOptions(
                sbom=sbom,
                service="demo-workload",
                hot_functions=HOT_FUNCTIONS,
                optional=OPTIONAL,
                binary_paths={WORKLOAD_PURL: str(workload), OPENSSL_PURL: str(LIBCRYPTO)},
            )
        )
        statement = generated_map.statement
        step(f"2. built the workload ({workload}) and generated its function map from {sbom.name}")
    else:
        statement = json.loads(RECORDED_FUNCTION_MAP.read_text())
        step(
            "2. no gcc/OpenSSL here to build the workload: using the function map recorded in "
            f"{RECORDED_FUNCTION_MAP}"
        )
    function_map = connected / "demo-workload-function-map.json"
    function_map.write_bytes(canonical_bytes(statement))
    envelope = connected / "demo-workload-function-map.dsse.json"
    sign_to_file(statement, [load_signer(key(RoleName.FUNCTION_MAP))], envelope)
    paths = statement["predicate"]["expected_paths"]
    say(f"   {len(paths)} expected paths, signed by the function-map key → {envelope.name}")

    # 3. collection.
    evidence = root / "production-host" / "evidence"
    evidence.mkdir(parents=True, exist_ok=True)
    reason = "--recorded" if force_recorded else ebpf_unavailable_reason()
    if workload is None:
        reason = reason or "the workload could not be built"
    live = False
    if reason is None:
        assert workload is not None
        step(f"3. collecting with the real eBPF collector for {COLLECT_SECONDS:.0f} s …")
        live, detail = collect_live(workload, envelope, evidence, key(RoleName.COLLECTOR))
        if live:
            say(f"   {detail}")
        else:
            reason = f"the eBPF collector could not run here: {detail}"
            shutil.rmtree(evidence / CHAIN_ID, ignore_errors=True)
    if not live:
        count = replay_recorded(evidence, key(RoleName.COLLECTOR))
        why = "--recorded given" if force_recorded else f"eBPF UNAVAILABLE: {reason}"
        step(
            f"3. {why}. Using {count} RECORDED observations from "
            f"{RECORDED_OBSERVATIONS} (captured by a real collection "
            "of this workload), sealed now with the demo collector key."
        )

    # 4. bundle, split, join.
    from .collector.lockfile import PACKAGE_BPF_DIR

    probes = PACKAGE_BPF_DIR if (PACKAGE_BPF_DIR / "probes.lock.json").exists() else None
    bundle = root / "connected-side" / "demo-workload.stella.bundle.tgz"
    built = build_bundle(
        function_maps=[envelope],
        evidence=[evidence],
        signer=load_signer(key(RoleName.BUILDER)),
        output=bundle,
        probes=probes,
    )
    step(
        f"4. built {bundle.name}: {built.size} bytes, {built.files} files, {built.records} "
        f"records, sha256 {built.sha256[:16]}…"
    )
    media = root / "removable-media"
    media.mkdir(exist_ok=True)
    shutil.copy(bundle, media / bundle.name)
    split = split_bundle(media / bundle.name, PART_SIZE)
    (media / bundle.name).unlink()
    step(f"5. split into {len(split.index.parts)} parts of ≤ {PART_SIZE} bytes in {media}")
    airgap = root / "air-gapped-side"
    joined = join_parts(split.index_path, airgap / bundle.name)
    if joined.sha256 != built.sha256:
        raise InternalError("the joined bundle differs from the built one")
    step(f"6. joined on the air-gapped side after checking every part: {joined.output}")

    # 5. verification, offline.
    outcome = verify_bundle(joined.output, TrustRoot.load(trust_root_path))
    files = write_reports(outcome, airgap / "report", load_signer(key(RoleName.AUDITOR)))
    step("7. verified offline against the trust root (no network used):")
    show(report_renderable(outcome.report))
    failure = outcome.failure_line()
    if failure:
        say(f"   {failure}")
    say(f"JSON report:   {files.json}")
    say(f"HTML report:   {files.html}")
    if files.envelope is not None:
        say(f"signed report: {files.envelope} (auditor key)")
    step("done")
    return DemoResult(
        root, joined.output, files.json, files.html, files.envelope, outcome.exit_code, live
    )
