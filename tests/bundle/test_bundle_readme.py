"""The README's transfer and air-gapped commands, run exactly as README.md prints them.

The command lines are read from README.md at test time (never copied here), so the README and
what the commands accept cannot drift apart.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.bundle.bundle_helpers import BundleInputs

REPO_ROOT = Path(__file__).resolve().parents[2]

# `stella` as the README means it: this checkout's package, whatever is installed on PATH.
_STELLA = f'stella() {{ {sys.executable} -m stella_bundle "$@"; }}\n'


def _readme_section(title: str) -> str:
    """The shell lines under `# <title>` in the README's flow block, up to the next comment."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.DOTALL)
    (flow,) = [b for b in blocks if f"\n# {title}\n" in b]
    section = flow.split(f"\n# {title}\n", 1)[1]
    lines = section.split("\n\n", 1)[0].strip()
    assert lines.startswith("stella "), lines
    return lines + "\n"


def _run(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _STELLA + script],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_readme_carry_and_air_gapped_commands_pass(
    tmp_path: Path, bundle_inputs: BundleInputs, test_keys: Any
) -> None:
    connected = tmp_path / "connected"
    connected.mkdir()
    shutil.copyfile(bundle_inputs.function_map_envelope, connected / "function-map.dsse.json")
    shutil.copytree(bundle_inputs.evidence, connected / "evidence")
    shutil.copyfile(test_keys.private("builder"), connected / "builder.key")
    probes = connected / "stella_bundle" / "collector"
    probes.mkdir(parents=True)
    (probes / "bpf").symlink_to(REPO_ROOT / "stella_bundle" / "collector" / "bpf")

    carry = _readme_section("carry it")
    built = _run(carry, connected)
    assert built.returncode == 0, built.stderr

    # The air-gapped side is another machine: only the parts, the index and the auditor's files.
    air_gapped = tmp_path / "air-gapped"
    air_gapped.mkdir()
    parts = sorted(connected.glob("api.stella.bundle.tgz.*"))
    assert any(p.name.endswith(".parts.json") for p in parts), parts
    for part in parts:
        shutil.copyfile(part, air_gapped / part.name)
    shutil.copyfile(test_keys.trust_root, air_gapped / "trust-root.json")
    shutil.copyfile(test_keys.private("auditor"), air_gapped / "auditor.key")

    audit = _readme_section("air-gapped side")
    assert "stella attest verify report/verification-report.dsse.json" in audit
    verified = _run(audit, air_gapped)
    assert verified.returncode == 0, verified.stderr
    assert "VERIFIED" in verified.stdout and "role auditor" in verified.stdout
    joined = air_gapped / "api.stella.bundle.tgz"
    assert joined.read_bytes() == (connected / "api.stella.bundle.tgz").read_bytes()


def test_the_report_itself_as_artifact_is_named_as_the_slip_it_is(
    tmp_path: Path, built_bundle: Path, test_keys: Any, run_cli: Any
) -> None:
    out = tmp_path / "report"
    assert run_cli("bundle", "verify", built_bundle, "--trust-root", test_keys.trust_root,
                   "--output-dir", out, "--report-key", test_keys.private("auditor"),
                   ).exit_code == 0  # fmt: skip
    wrong = run_cli(
        "attest", "verify", out / "verification-report.dsse.json", "--trust-root",
        test_keys.trust_root, "--role", "auditor", "--artifact", out / "verification-report.json",
    )  # fmt: skip
    assert wrong.exit_code == 1
    assert "is this statement itself, not its subject" in wrong.stderr
    assert built_bundle.name in wrong.stderr
