"""The demo behind the README's first command: the whole flow, live eBPF or recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stella_bundle.demo import ebpf_unavailable_reason, run_demo
from stella_bundle.schema import validate_document

REPO = Path(__file__).resolve().parents[2]


def _check_reports(result_json: Path, result_html: Path) -> dict:  # type: ignore[type-arg]
    statement = json.loads(result_json.read_text())
    validate_document("verification-report", statement)
    assert result_html.read_text().count('id="verdict"') == 1
    return statement["predicate"]  # type: ignore[no-any-return]


def test_demo_with_recorded_observations(tmp_path: Path) -> None:
    lines: list[str] = []
    started = time.monotonic()
    result = run_demo(tmp_path / "ws", say=lines.append, show=lambda _: None, force_recorded=True)
    assert time.monotonic() - started < 60
    assert result.exit_code == 0 and result.live_collection is False
    text = "\n".join(lines)
    assert "RECORDED observations" in text and "--recorded given" in text
    assert f"JSON report:   {result.report_json}" in text
    assert f"HTML report:   {result.report_html}" in text
    report = _check_reports(result.report_json, result.report_html)
    assert report["verification_result"] == "PASSED"
    statuses = {p["path_id"].split("/")[-2]: p["status"] for p in report["per_path_breakdown"]}
    assert statuses["stella_work_never"] == "missing"  # optional, the workload never calls it
    assert statuses["stella_work_hot"] == statuses["EVP_Digest"] == "observed"
    assert len(list((result.workspace / "removable-media").glob("*.part-*"))) >= 2
    assert result.report_envelope is not None and result.report_envelope.exists()


@pytest.mark.ebpf
def test_demo_collects_with_real_ebpf(tmp_path: Path) -> None:
    reason = ebpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    lines: list[str] = []
    started = time.monotonic()
    result = run_demo(tmp_path / "ws", say=lines.append, show=lambda _: None)
    assert time.monotonic() - started < 60
    assert result.live_collection, "\n".join(lines)
    assert "real eBPF collector" in "\n".join(lines)
    assert result.exit_code == 0, "\n".join(lines)
    report = _check_reports(result.report_json, result.report_html)
    (chain,) = report["evidence"]
    assert chain["final_seal_present"] and chain["records"] >= 3


@pytest.mark.slow
def test_demo_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    """`stella demo` from a wheel installed in a virtualenv, run outside any source tree: its
    workload source and recorded observations are package data, not files of the clone."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("stella_bundle-*.whl")
    venv = tmp_path / "venv"
    # Without a pip of its own (ensurepip took seconds): the system's pip, run by the venv's
    # python, installs into the venv.
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
    )
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [str(venv / "bin" / "stella"), "demo", "--workspace", str(away / "ws")],
        cwd=away,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "verdict: PASSED" in done.stdout
    if ebpf_unavailable_reason() is None:
        assert "real eBPF collector" in done.stdout, done.stdout[-3000:]
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import stella_bundle; print(stella_bundle.__file__)"],
        capture_output=True, text=True, env=env, cwd=away,
    ).stdout  # fmt: skip
    assert where.startswith(str(venv)), where
    assert not (Path(where).parents[1] / "fixtures").exists()
