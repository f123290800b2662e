"""One HTTP listener for operators: `/metrics` (Prometheus), `/healthz` (alive), `/readyz`.

`/healthz` answers 200 while the collection loop turns (a loop stuck for `stall_seconds` is a
reason to restart the agent); `/readyz` answers 200 once probes are attached and until the
final seal starts, so a rolling update waits for a node's agent to really collect.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
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


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the agent's log."""


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

        class Server(ThreadingWSGIServer):
            address_family = family

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
