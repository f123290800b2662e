"""A real server bounds the request head: header bytes without the blank line that ends them
were buffered without end by httptools (40 MB on one connection, measured); now 431 past
64 KiB, the connection closed, and the server serves the next client."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_support import Server

from stella_bundle.api.request_head import MAX_REQUEST_HEAD_BYTES
from stella_bundle.store import open_store


def _send_head(port: int, header_bytes: int, *, end: bool) -> bytes:
    """A GET with `header_bytes` of X-Pad headers (4 KiB lines); the answer read until the
    server closes or answers (a deadline, never a bare wait)."""
    line = b"X-Pad: " + b"p" * 4089 + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        sent = 0
        try:
            while sent < header_bytes:
                conn.sendall(line)
                sent += len(line)
            if end:
                conn.sendall(b"\r\n")
        except OSError:
            pass  # closed by the server while sending: its answer is read below
        answer = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                data = conn.recv(65536)
            except OSError:
                break
            if not data:
                break
            answer += data
            if b"\r\n\r\n" in answer and (b"431" in answer[:20] or b"200" in answer[:20]):
                head, _, body = answer.partition(b"\r\n\r\n")
                if b"content-length" not in head.lower() or len(body) >= int(
                    head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]
                ):
                    break
        return answer


@pytest.mark.parametrize("workers", [1, 2])
def test_a_request_head_past_the_limit_is_431_and_the_server_serves_on(
    workers: int, test_keys: Any, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    open_store(url, initialise=True).close()
    server = Server("--trust-root", test_keys.trust_root, "--store", url, "--workers", workers)
    server.start()
    try:
        # Under the bound: served.
        assert _send_head(server.port, MAX_REQUEST_HEAD_BYTES // 2, end=True).startswith(
            b"HTTP/1.1 200"
        )
        # Past it, the head never ended: refused, one line naming the limit.
        refused = _send_head(server.port, 4 * MAX_REQUEST_HEAD_BYTES, end=False)
        assert refused.startswith(b"HTTP/1.1 431"), refused[:200]
        assert str(MAX_REQUEST_HEAD_BYTES).encode() in refused
        assert httpx.get(server.url + "/healthz", timeout=30).status_code == 200
    finally:
        server.stop()
