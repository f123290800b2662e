"""The README's first command, `pip install rust-just && just demo`, in a fresh clone.

A file of its own (it takes a minute or more): `just test` gives each xdist worker whole files,
and this one beside the wheel's demo kept one worker busy long after the other had finished.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_readme_first_command_from_a_fresh_clone(tmp_path: Path) -> None:
    """`pip install rust-just && just demo` in a fresh clone, in its own virtualenv."""
    clone = tmp_path / "clone"
    if (REPO / ".git").exists():
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    else:  # a source tree without history (CI from an archive): copy what a clone would hold
        shutil.copytree(
            REPO, clone, ignore=shutil.ignore_patterns(".*", "__pycache__", "*.egg-info")
        )
    venv = tmp_path / "venv"
    # Without ensurepip (seconds per run): the venv's `pip` runs the system's pip module with the
    # venv's python, which installs into the venv as the venv's own pip would.
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
    )
    (venv / "bin" / "pip").write_text('#!/bin/sh\nexec "$(dirname "$0")/python" -m pip "$@"\n')
    (venv / "bin" / "pip").chmod(0o755)
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    started = time.monotonic()
    done = subprocess.run(
        ["bash", "-c", "pip install -q rust-just && just demo"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "verdict: PASSED" in done.stdout
    html = next(line for line in done.stdout.splitlines() if line.startswith("HTML report:"))
    assert Path(html.split(":", 1)[1].strip()).exists()
    # The clone's package ran, not the work tree's.
    assert str(clone) in subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import stella_bundle; print(stella_bundle.__file__)"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    ).stdout  # fmt: skip
    print(f"fresh clone → just demo: {time.monotonic() - started:.1f} s")
