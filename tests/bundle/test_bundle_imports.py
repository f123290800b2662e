"""`bundle build` and `bundle verify` import what they use: modules a command does not need are
start-up time on every run (issue 15: each command's start-up is a third of it at 300,000
records)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any


def _run(script: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_build_does_not_import_the_coverage_engine(
    tmp_path: Path, bundle_inputs: Any, test_keys: Any
) -> None:
    """The build checks records with the map verifier's scan only (`coverage.scan`), never
    judges them against a map: the engine (`coverage.engine`) and its imports stay out."""
    output = tmp_path / "x.stella.bundle.tgz"
    argv = [
        "bundle", "build", "--function-map", str(bundle_inputs.function_map_envelope),
        "--evidence", str(bundle_inputs.evidence), "--key", str(test_keys.private("builder")),
        "--output", str(output),
    ]  # fmt: skip
    _run(
        "import sys\n"
        "from stella_bundle.cli import main\n"
        f"code = main({argv!r})\n"
        "assert code == 0, code\n"
        "assert 'stella_bundle.coverage.engine' not in sys.modules, 'coverage.engine imported'\n"
    )
    assert output.is_file()


def test_verify_does_not_import_what_only_other_commands_print(
    tmp_path: Path, built_bundle: Path, test_keys: Any
) -> None:
    """`formats.written` models what build, split and join print; verify prints its report."""
    argv = [
        "bundle", "verify", str(built_bundle), "--trust-root", str(test_keys.trust_root),
        "--output-dir", str(tmp_path),
    ]  # fmt: skip
    _run(
        "import sys\n"
        "from stella_bundle.cli import main\n"
        f"code = main({argv!r})\n"
        "assert code == 0, code\n"
        "assert 'stella_bundle.formats.written' not in sys.modules, 'formats.written imported'\n"
    )
    assert (tmp_path / "verification-report.json").is_file()
