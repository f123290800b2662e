"""Headless Chromium for the page tests (the bundle report, the dashboard, the table pages):
one set of flags, no network, a private profile per call."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--enable-logging=stderr",
]


def run_chromium(
    profile: Path, *args: str, window: str = "1200,2400", timeout: int = 180
) -> subprocess.CompletedProcess[str]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: scripts/setup.sh installs it (apt-get install chromium)")
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--window-size={window}", f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def page_problems(*stderr: str) -> list[str]:
    """Lines of Chromium's log saying a page failed to load something logged an error or broke its
    Content Security Policy."""
    return [
        line
        for text in stderr
        for line in text.splitlines()
        if "CONSOLE" in line
        or "net::ERR" in line
        or "Failed to load" in line
        or "Content Security Policy" in line
    ]
