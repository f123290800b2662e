"""Running the API under uvicorn: the listen policy, TLS, and the server itself.

Policy: on a loopback address the server may run without TLS and without tokens (a developer's
machine). Anywhere else it needs both, TLS (uvicorn's certificate options) and a tokens file,
unless `--insecure-listen` says the operator knows better (a TLS-terminating sidecar, say).
"""

from __future__ import annotations

import dataclasses
import gc
import ipaddress
import json
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.types import Message, Scope

from ..errors import ConfigError
from .app import create_app
from .request_head import DEFAULT_SLOW_CLIENT_LIMITS, LIMITS_ATTRIBUTE, SlowClientLimits
from .settings import DEFAULT_MAX_BODY_BYTES, ApiSettings

# Worker processes (`--workers N`) rebuild the app from the options passed in this variable.
OPTIONS_VARIABLE: Final = "STELLA_SERVE_OPTIONS"
# A path no route takes (`warm_up`).
WARM_UP_PATH: Final = "/.stella-warm-up"


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


def _check_tls_pair(cert: Path, key: Path) -> None:
    """The certificate and key load as uvicorn will load them, checked before the server is
    announced (uvicorn's failure was an internal error after "stella serve: https://…")."""

    def no_password() -> bytes:
        raise ConfigError(
            "the key is encrypted: give it unencrypted (mode 0600) to stella serve",
            path=key,
            field="--tls-key",
        )

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            cert, key, password=no_password
        )
    except ssl.SSLError as exc:
        raise ConfigError(
            f"cannot load the certificate and key as a PEM pair: {exc.reason or exc} (key {key})",
            path=cert,
            field="--tls-cert",
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot read the certificate or key: {exc.strerror}", path=cert, field="--tls-cert"
        ) from exc


def check_listen(listen: Listen, has_tokens: bool, insecure: bool) -> list[str]:
    """Refuse a non-loopback listener without TLS and tokens; the warnings to print."""
    if (listen.tls_cert is None) != (listen.tls_key is None):
        raise ConfigError("give both --tls-cert and --tls-key, or neither", field="--tls-cert")
    for option, path in (("--tls-cert", listen.tls_cert), ("--tls-key", listen.tls_key)):
        if path is not None and not path.is_file():
            raise ConfigError("file not found", path=path, field=option)
    if listen.tls_cert is not None and listen.tls_key is not None:
        _check_tls_pair(listen.tls_cert, listen.tls_key)
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


@dataclass(frozen=True)
class ServeOptions:
    """What the server is built from, as plain values a worker process can receive."""

    store_url: str
    trust_root: str
    tokens: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    config: str | None = None  # stellaops.yaml (its tetragon: section)
    tetragon_evidence: str | None = None
    tetragon_key: str | None = None
    tetragon_function_map: str | None = None
    tetragon_sbom: str | None = None


def build_settings(options: ServeOptions) -> ApiSettings:
    from ..formats.trust_root import TrustRoot
    from .tokens import TokenFile

    trust_root = TrustRoot.load(options.trust_root)
    settings = ApiSettings(
        store_url=options.store_url,
        trust_root=trust_root,
        tokens=TokenFile.load(options.tokens) if options.tokens is not None else None,
        max_body_bytes=options.max_body_bytes,
    )
    if options.tetragon_evidence is not None:
        from ..attest.keys import load_signer
        from ..functionmap.load import is_envelope_document, load_function_map
        from ..functionmap.sbom import load_sbom
        from ..jsonio import parse_json, read_bytes
        from ..tetragon.config import load_tetragon_config
        from ..tetragon.nodes import NodeIndex
        from ..tetragon.service import runtime_trace_service

        function_map = None
        if options.tetragon_function_map is not None:
            path = options.tetragon_function_map
            # A signed map must verify against the trust root; an unsigned one is read as is.
            signed = is_envelope_document(parse_json(read_bytes(path), path))
            function_map = load_function_map(path, trust_root if signed else None).function_map
        sbom = load_sbom(options.tetragon_sbom) if options.tetragon_sbom else None
        settings.runtime = runtime_trace_service(
            Path(options.tetragon_evidence),
            load_tetragon_config(options.config),
            NodeIndex(function_map, sbom),
        )
        if options.tetragon_key is not None:
            settings.runtime_signer = load_signer(options.tetragon_key)
    return settings


# Young objects between collections of the youngest generation (Python's default: 700). A
# verify request makes a few thousand short-lived containers (the report's dicts, FastAPI's
# per-request objects); with 50 requests in flight the default threshold collected several
# times per request and promoted the objects of the requests in flight to the older
# generations, whose collections walked the whole heap: 14% of the server's CPU (perf), 2 ms
# of each request's time under load. Few objects live through a collection at this threshold.
GC_YOUNG_THRESHOLD: Final = 20_000


def tune_gc() -> None:
    """A serving process's collector: what is loaded once the app is built is moved out of the
    collector's sight (`gc.freeze`: it lives as long as the process; full collections no
    longer walk it), and the youngest generation is collected less often."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def _walk_routes(app: FastAPI) -> None:
    """Match a path no route takes, so every route is tried once: FastAPI (0.16x) builds an
    included route's state (its signature, annotations evaluated, pydantic fields) the first
    time a request is matched against it."""

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": WARM_UP_PATH,
        "raw_path": WARM_UP_PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": None,
        "server": None,
        "app": app,
    }
    # Driven by hand: a server's loop may be running already (uvicorn calls its factory from
    # it). Matching does not wait on anything; the 404 at the end is raised at once.
    walk = app.router(scope, receive, send)
    try:
        walk.send(None)
    except (StopIteration, HTTPException):
        pass
    finally:
        walk.close()


def warm_up(app: FastAPI) -> None:
    """What a serving process's first requests would otherwise pay, done before it serves (and
    before `tune_gc` freezes what it leaves): FastAPI's route state (~90 ms, on the event loop,
    while the requests behind the first waited) and the function-map schema's validator
    (jsonschema and its dependencies imported, the schema compiled: ~100 ms in the first
    verification naming a map this process has not loaded yet). At the start of `bench/api.py` each
    worker's first 25 requests waited for both."""
    from ..functionmap.schema_check import SCHEMA_NAME
    from ..schema import validator_for

    _walk_routes(app)
    validator_for(SCHEMA_NAME)


def app_from_environment() -> FastAPI:
    """The app of a worker process (uvicorn's factory), from `STELLA_SERVE_OPTIONS`."""
    values: dict[str, Any] = json.loads(os.environ[OPTIONS_VARIABLE])
    app = create_app(build_settings(ServeOptions(**values)))
    warm_up(app)
    tune_gc()
    return app


# Connections one worker holds (uvicorn's limit_concurrency: past it, requests are answered
# 503 and the connection closed). With the slow-client bounds of request_head.py, connections
# held without progress are let go within the head or body time.
DEFAULT_MAX_CONNECTIONS: Final = 1024


def serve(
    options: ServeOptions,
    listen: Listen,
    workers: int = 1,
    slow_clients: SlowClientLimits = DEFAULT_SLOW_CLIENT_LIMITS,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> None:
    """Run until interrupted (SIGINT/SIGTERM: uvicorn finishes the requests in flight).

    With several workers, each is a process of its own (one verification uses one CPU); the
    bridge's chain takes one writer at a time, so the bridge needs a single worker."""
    import uvicorn

    if workers < 1:
        raise ConfigError("expected at least 1", field="--workers")
    if workers > 1 and options.tetragon_evidence is not None:
        raise ConfigError(
            "the Tetragon bridge appends to one chain: serve it with one worker",
            field="--workers",
        )
    settings = build_settings(options)  # errors surface here, before any worker starts
    if workers > 1:
        os.environ[OPTIONS_VARIABLE] = json.dumps(dataclasses.asdict(options))
        target: Any = "stella_bundle.api.server:app_from_environment"
    else:
        target = create_app(settings)
    config = uvicorn.Config(
        target,
        factory=workers > 1,
        workers=workers,
        # uvloop; the workers share the connections evenly and TLS handshakes are bounded
        # (api/balance.py).
        loop="stella_bundle.api.balance:new_event_loop",
        host=listen.host,
        port=listen.port,
        ssl_certfile=str(listen.tls_cert) if listen.tls_cert else None,
        ssl_keyfile=str(listen.tls_key) if listen.tls_key else None,
        # X-Forwarded-* would let any client choose the address it is logged under.
        proxy_headers=False,
        server_header=False,
        log_level="warning",
        # Idle time between a response and the next request (uvicorn's only timer; a request's
        # head and body are timed by request_head.py).
        timeout_keep_alive=30,
        limit_concurrency=max_connections,
        # httptools with bounds on the request head's size and on slow heads and bodies (it
        # has none: api/request_head.py).
        http="stella_bundle.api.request_head:BoundedHeadProtocol",
    )
    setattr(config, LIMITS_ATTRIBUTE, slow_clients)
    from .balance import HANDSHAKE_VARIABLE

    # A TLS handshake is part of the head's time (inherited by the worker processes).
    os.environ[HANDSHAKE_VARIABLE] = repr(slow_clients.head_seconds)
    if workers > 1:
        # uvicorn's supervisor: it binds the socket once and starts the worker processes,
        # which share its connections through the file of their counts.
        from uvicorn.supervisors import Multiprocess

        from .balance import SHARE_VARIABLE, create_share

        with tempfile.TemporaryDirectory(prefix="stella-serve-") as directory:
            share = Path(directory) / "connections"
            create_share(share, workers)
            os.environ[SHARE_VARIABLE] = str(share)
            socket = config.bind_socket()
            Multiprocess(config, sockets=[socket]).run()
    else:
        config.load()  # the protocol and loop modules, imported before the heap is frozen
        warm_up(target)
        tune_gc()
        uvicorn.Server(config).run()
