"""A real `stella serve` process (uvicorn) for the API tests that need one."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """`python -m stella_bundle serve ARGS` on a free loopback port, ready when /readyz is."""

    def __init__(self, *args: str | os.PathLike[str], tls_ca: Path | None = None) -> None:
        self.port = free_port()
        self.args = [str(a) for a in args]
        self.scheme = "https" if tls_ca else "http"
        self.verify: Any = ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else True
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stella_bundle",
                "serve",
                "--listen",
                f"127.0.0.1:{self.port}",
                *self.args,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                _, err = self.process.communicate()
                raise AssertionError(
                    f"stella serve exited {self.process.returncode}: {err.decode()}"
                )
            try:
                if (
                    httpx.get(self.url + "/readyz", verify=self.verify, timeout=2).status_code
                    == 200
                ):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()  # not left running (and loading the machine) after the test has failed
        raise AssertionError("stella serve did not become ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
