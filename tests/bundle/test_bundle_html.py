"""The HTML report: self-contained, rendered by headless Chromium to a PNG, shows the verdict."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from chromium_support import page_problems, run_chromium

from stella_bundle.formats.report import VerificationReport
from stella_bundle.report import render_html

EXAMPLE = Path(__file__).resolve().parents[2] / "fixtures/schemas/examples/verification-report.json"


def example_report(**changes: Any) -> VerificationReport:
    """The example report with some fields replaced: the renderers read the typed model."""
    return VerificationReport.from_dict({**json.loads(EXAMPLE.read_text()), **changes})


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_chromium(profile, *args, window="1200,2400", timeout=120)


@pytest.fixture(scope="module")
def report_dir(
    tmp_path_factory: pytest.TempPathFactory, built_bundle: Path, test_keys: Any
) -> Path:
    from stella_bundle.formats.trust_root import TrustRoot
    from stella_bundle.report import write_reports
    from stella_bundle.verify import verify_bundle

    out = tmp_path_factory.mktemp("html")
    write_reports(verify_bundle(built_bundle, TrustRoot.load(test_keys.trust_root)), out)
    return out


def test_html_is_self_contained(report_dir: Path) -> None:
    page = (report_dir / "verification-report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "@import" not in page and "url(" not in page
    assert "default-src 'none'" in page
    for section in ("Paths", "Missing symbols", "Unexpected symbols", "Evidence chains", "Signers"):
        assert f"<h2>{section}</h2>" in page
    assert "<svg" in page and 'aria-label="observation rate per tag"' in page
    report = json.loads((report_dir / "verification-report.json").read_text())["predicate"]
    fingerprint = report["input_attestations"][0]["signers"][0]["fingerprint"]
    assert fingerprint in page


def test_html_escapes_what_the_bundle_says() -> None:
    page = render_html(
        example_report(
            verification_result="FAILED",
            service="<script>alert(1)</script>",
            missing_symbols=["<img src=x onerror=alert(1)>"],
            per_tag={"<b>": {"observation_rate": 0.5, "target_rate": 0.9, "verified": False}},
        )
    )
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>" not in page
    assert "&lt;script&gt;" in page and "&lt;b&gt;" in page


def test_optional_paths_are_marked_as_such() -> None:
    from rich.console import Console

    from stella_bundle.report import report_renderable

    report = example_report(
        per_path_breakdown=[
            {"path_id": "p-required", "tag": "crypto", "status": "observed", "optional": False},
            {"path_id": "p-optional", "tag": "crypto", "status": "missing", "optional": True},
        ]
    )
    page = render_html(report)
    assert page.count("(optional)") == 1
    assert re.search(r"p-optional.*?missing</span> \(optional\)", page, re.S)
    console = Console(record=True, width=200)
    console.print(report_renderable(report))
    text = console.export_text()
    assert "missing (optional)" in text and "observed (optional)" not in text


def test_chromium_renders_the_report(report_dir: Path, tmp_path: Path) -> None:
    page = (report_dir / "verification-report.html").as_uri()
    png = tmp_path / "report.png"
    shot = _chromium(tmp_path / "profile", f"--screenshot={png}", page)
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    dom = _chromium(tmp_path / "profile", "--dump-dom", page)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert re.search(r'id="verdict"[^>]*>PASSED<', dom.stdout)
    assert "observation rate" in dom.stdout and "100.0 %" in dom.stdout
    # Loaded without errors: no failed resource loads, no console errors about the page.
    assert page_problems(shot.stderr, dom.stderr) == []
