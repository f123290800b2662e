"""One HTTP listener for operators: `/metrics` (Prometheus), `/healthz` (alive), `/readyz`.

`/healthz` answers 200 while the collection loop turns (a loop stuck for `stall_seconds` is a
reason to restart the agent); `/readyz` answers 200 once probes are attached and until the
final seal starts, so a rolling update waits for a node's agent to really collect.
"""

from __future__ import annotations

import io
import ipaddress
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from ..errors import ConfigError

# Loopback by default: metrics name the host's services. 9464 is the port OpenTelemetry's
# Prometheus exporter uses by convention; nothing else of ours listens there.
DEFAULT_LISTEN = "127.0.0.1:9464"
_StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def parse_listen(text: str, field: str = "--metrics-listen") -> tuple[str, int]:
    """`HOST:PORT` or `[IPV6]:PORT`, an IP literal (a name would need a resolver at start);
    port 0 picks a free port (said on start)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ConfigError(f"expected HOST:PORT such as {DEFAULT_LISTEN}, got {text!r}", field=field)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"expected an IP address before the port (127.0.0.1, 0.0.0.0, [::1]), got {host!r}",
            field=field,
        ) from None
    return host, int(port_text)


class HealthState:
    """Liveness from loop heartbeats, readiness set by whoever attaches and stops."""

    def __init__(self, stall_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_seconds = stall_seconds
        self._clock = clock
        self._beat = clock()
        self._ready = False
        self._not_ready_because = "probes not attached yet"

    def heartbeat(self, at: float | None = None) -> None:
        """A turn of the loop now, or at `at` (the oldest turn of the loops it stands for)."""
        self._beat = self._clock() if at is None else at

    def ready(self) -> None:
        self._ready = True

    def not_ready(self, because: str) -> None:
        self._ready, self._not_ready_because = False, because

    def liveness(self) -> tuple[bool, str]:
        quiet = self._clock() - self._beat
        if quiet > self.stall_seconds:
            return False, f"collection loop stalled: no turn for {quiet:.0f} s"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        return (True, "ok") if self._ready else (False, self._not_ready_because)


# A request (line, headers, answer) must be done within this time of its connection's
# opening, and at most this many connections are served at once (more are closed unanswered):
# the standard library's server has neither, so a client that connected and sent nothing, or
# a byte at a time, held a thread for ever, and each such connection took another.
REQUEST_SECONDS: Final = 10.0
MAX_CONNECTIONS: Final = 32


class _DeadlineReader(io.RawIOBase):
    """The connection's bytes, each read given only what is left of the request's time (a
    socket timeout alone restarts at every byte)."""

    def __init__(self, connection: socket.socket, deadline: float) -> None:
        self._connection, self._deadline = connection, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request not received in time")
        self._connection.settimeout(left)
        return self._connection.recv_into(buffer)


class _QuietHandler(WSGIRequestHandler):
    def setup(self) -> None:
        super().setup()
        deadline = time.monotonic() + REQUEST_SECONDS
        self.connection.settimeout(REQUEST_SECONDS)  # the answer's writes too
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline))

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the agent's log."""

    def log_error(self, format: str, *args: Any) -> None:
        """A client that timed out is not the agent's error."""


class MetricsServer:
    """The listener, served from a daemon thread until `close`."""

    def __init__(self, listen: str, registry: CollectorRegistry, health: HealthState) -> None:
        host, port = parse_listen(listen)
        metrics_app = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: _StartResponse) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path in ("/healthz", "/readyz"):
                ok, text = health.liveness() if path == "/healthz" else health.readiness()
                status = "200 OK" if ok else "503 Service Unavailable"
                start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
                return [text.encode() + b"\n"]
            if path != "/metrics":
                start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
                return [b"not found: /metrics, /healthz and /readyz are served\n"]
            result: Iterable[bytes] = metrics_app(environ, start_response)
            return result

        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

        class Server(ThreadingWSGIServer):
            address_family = family

            def process_request(self, request: Any, client_address: Any) -> None:
                if not slots.acquire(blocking=False):
                    self.shutdown_request(request)  # every slot held: closed, not queued
                    return
                super().process_request(request, client_address)

            def process_request_thread(self, request: Any, client_address: Any) -> None:
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    slots.release()

            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client gone or too slow is not the agent's error: no traceback for it.
                if not isinstance(sys.exc_info()[1], OSError):
                    super().handle_error(request, client_address)

        try:
            self._server = make_server(host, port, app, Server, handler_class=_QuietHandler)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {listen}: {exc.strerror or exc}", field="--metrics-listen"
            ) from exc
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="stella-metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
