"""Running the API under uvicorn: the listen policy, TLS, and the server itself.

Policy: on a loopback address the server may run without TLS and without tokens (a developer's
machine). Anywhere else it needs both, TLS (uvicorn's certificate options) and a tokens file,
unless `--insecure-listen` says the operator knows better (a TLS-terminating sidecar, say).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .app import create_app
from .settings import ApiSettings


@dataclass(frozen=True)
class Listen:
    host: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


def check_listen(listen: Listen, has_tokens: bool, insecure: bool) -> list[str]:
    """Refuse a non-loopback listener without TLS and tokens; the warnings to print."""
    if (listen.tls_cert is None) != (listen.tls_key is None):
        raise ConfigError("give both --tls-cert and --tls-key, or neither", field="--tls-cert")
    for option, path in (("--tls-cert", listen.tls_cert), ("--tls-key", listen.tls_key)):
        if path is not None and not path.is_file():
            raise ConfigError("file not found", path=path, field=option)
    if ipaddress.ip_address(listen.host).is_loopback:
        return [] if has_tokens else ["no --tokens: every local request is accepted as admin"]
    missing = []
    if not listen.tls:
        missing.append("TLS (--tls-cert, --tls-key)")
    if not has_tokens:
        missing.append("bearer tokens (--tokens)")
    if not missing:
        return []
    if not insecure:
        raise ConfigError(
            f"listening on {listen.host}, which is not loopback, needs {' and '.join(missing)}; "
            "or pass --insecure-listen",
            field="--listen",
        )
    return [f"--insecure-listen: serving on {listen.host} without {' and '.join(missing)}"]


def serve(settings: ApiSettings, listen: Listen) -> None:
    """Run until interrupted (SIGINT/SIGTERM: uvicorn finishes the requests in flight)."""
    import uvicorn

    config = uvicorn.Config(
        create_app(settings),
        host=listen.host,
        port=listen.port,
        ssl_certfile=str(listen.tls_cert) if listen.tls_cert else None,
        ssl_keyfile=str(listen.tls_key) if listen.tls_key else None,
        # X-Forwarded-* would let any client choose the address it is logged under.
        proxy_headers=False,
        server_header=False,
        log_level="warning",
        # Larger than the uvicorn default: a request body arriving slowly over a bad link.
        timeout_keep_alive=30,
    )
    uvicorn.Server(config).run()
