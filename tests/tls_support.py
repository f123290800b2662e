"""TLS servers for tests and benchmarks: a self-signed certificate and nginx serving TLS.

Shared by tests/collector (the nginx scope case, the TLS source) and bench/ (nginx under load,
TLS handshakes): one definition of how the certificate is made and nginx is configured, so a
benchmark measures the set-up a test proves. Benchmarks import it with tests/ on sys.path.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from service_support import free_port

NGINX = "/usr/sbin/nginx"
AB = "/usr/bin/ab"


class ServerDidNotStart(RuntimeError):
    """A server exited or did not listen in time; the message carries its error log."""


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """(key, certificate) for CN=localhost, P-256, valid one day, made by openssl in `directory`
    (reused when already there)."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    if not cert.exists():
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-nodes", "-subj", "/CN=localhost", "-days", "1"),
                *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
                *("-keyout", str(key), "-out", str(cert)),
            ],
            check=True,
            capture_output=True,
        )
    return key, cert


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Return once 127.0.0.1:`port` accepts; ServerDidNotStart if `process` exits first or the
    time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        if process.poll() is not None or time.monotonic() > deadline:
            detail = log.read_text() if log.exists() else "(no log)"
            raise ServerDidNotStart(f"server on port {port} did not listen: {detail}")
        time.sleep(0.05)


@contextlib.contextmanager
def nginx_tls(root: Path, worker_connections: int = 256) -> Iterator[tuple[str, int]]:
    """nginx (one worker) serving TLS on a free loopback port with its own prefix, config and
    self-signed key under `root`; yields its URL and master pid."""
    key, cert = self_signed_certificate(root)
    port = free_port()
    temp = {name: root / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for directory in temp.values():
        directory.mkdir(exist_ok=True)
    (root / "nginx.conf").write_text(
        f"""daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections {worker_connections}; }}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""
    )
    log = root / "error.log"
    server = subprocess.Popen(
        [NGINX, "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(log)]
    )
    try:
        wait_listening(port, server, log, timeout=60)
        yield f"https://127.0.0.1:{port}/", server.pid
    finally:
        server.terminate()
        server.wait(timeout=20)
