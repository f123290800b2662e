"""`stella serve`: the REST API and coverage dashboard; `stella serve token …`: its tokens."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import ConfigError
from ..formats.written import TokenIssued, TokenRemoved
from ..report.kinds import TOKEN_ISSUED, TOKEN_REMOVED, TOKENS
from ..report.registry import OutputFormat
from .output import emit, error_line, format_option
from .store_options import config_option, store_url_option

DEFAULT_LISTEN = "127.0.0.1:8080"

# Its help is its line in cli/app.py's GROUPS table.
app = typer.Typer(
    invoke_without_command=True,
)
token_app = typer.Typer(help="Bearer tokens of the API (kept hashed in a tokens file).")
app.add_typer(token_app, name="token")


@app.callback()
def serve(
    ctx: typer.Context,
    listen: str = typer.Option(
        DEFAULT_LISTEN,
        "--listen",
        help="HOST:PORT, an IP address (not loopback: needs --tls-cert/--tls-key and --tokens, "
        f"or --insecure-listen; default: {DEFAULT_LISTEN}).",
    ),
    trust_root: Path | None = typer.Option(
        None,
        "--trust-root",
        help="trust-root.json: evidence and signed maps are verified against it (required to serve; "
        "default: none, refused).",
    ),
    tokens: Path | None = typer.Option(
        None,
        "--tokens",
        help="Tokens file of `stella serve token add` (default: none, loopback only, every "
        "request accepted).",
    ),
    tls_cert: Path | None = typer.Option(
        None, "--tls-cert", help="PEM certificate chain (default: none, plain HTTP)."
    ),
    tls_key: Path | None = typer.Option(
        None, "--tls-key", help="PEM private key of --tls-cert (default: none)."
    ),
    insecure_listen: bool = typer.Option(
        False,
        "--insecure-listen",
        help="Allow a non-loopback address without TLS or tokens (default: refused).",
    ),
    max_body_bytes: int = typer.Option(
        32 << 20,
        "--max-body-bytes",
        help="Larger request bodies are refused, 413 (default: 32 MiB).",
    ),
    tetragon_evidence: Path | None = typer.Option(
        None,
        "--tetragon-evidence",
        help="Evidence directory of the Tetragon bridge's chains (default: none, the runtime "
        "endpoints answer empty results).",
    ),
    tetragon_key: Path | None = typer.Option(
        None,
        "--tetragon-key",
        help="The bridge's collector key, sealing POST /api/v1/runtime-traces (default: none).",
    ),
    tetragon_function_map: Path | None = typer.Option(
        None,
        "--tetragon-function-map",
        help="Map Tetragon's events to nodes with this FM.json/FM.dsse.json (checked with "
        "--trust-root when signed; default: none, kernel and exec events only).",
    ),
    tetragon_sbom: Path | None = typer.Option(
        None,
        "--tetragon-sbom",
        help="CycloneDX SBOM mapping binaries to components (default: none).",
    ),
    header_timeout: float = typer.Option(
        20.0,
        "--header-timeout",
        help="Seconds for a request's line and headers to arrive, from its first byte (or the "
        "connection's opening); past it 408 and the connection closed; a TLS handshake gets as "
        "long (default: 20).",
    ),
    body_timeout: float = typer.Option(
        20.0,
        "--body-timeout",
        help="Seconds for a request body, plus one per 500 bytes received; past it 408 and the "
        "connection closed (default: 20).",
    ),
    max_connections: int = typer.Option(
        1024,
        "--max-connections",
        help="Connections each worker holds; past it requests are answered 503 (default: 1024).",
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        help="Server processes (one verification uses one CPU; the bridge needs 1; default: 1).",
    ),
    store: str | None = store_url_option(),
    config: Path | None = config_option(),
) -> None:
    """Serve the API (until Ctrl-C). The store is initialised if new."""
    if ctx.invoked_subcommand is not None:
        return
    from ..agent.endpoint import parse_listen
    from ..api import TokenFile
    from ..api.request_head import SlowClientLimits
    from ..api.server import Listen, ServeOptions, check_listen
    from ..api.server import serve as run_server
    from ..store import open_store
    from ..store.config import store_settings

    if trust_root is None:
        raise ConfigError(
            "a trust root is required: evidence and signed maps are verified before they are "
            "stored",
            field="--trust-root",
        )
    if max_body_bytes < 1024:
        raise ConfigError("expected at least 1024 bytes", field="--max-body-bytes")
    for value, option in ((header_timeout, "--header-timeout"), (body_timeout, "--body-timeout")):
        # `not 0 < x <= 3600`: NaN fails it too.
        if not 0 < value <= 3600:
            raise ConfigError(f"expected seconds in (0, 3600], got {value}", field=option)
    if not 1 <= max_connections <= 1_000_000:
        raise ConfigError(
            f"expected 1 to 1000000 connections, got {max_connections}", field="--max-connections"
        )
    host, port = parse_listen(listen, "--listen")
    where = Listen(host, port, tls_cert, tls_key)
    if tokens is not None:
        TokenFile.load(tokens)  # a bad tokens file is refused before anything opens
    for warning in check_listen(where, tokens is not None, insecure_listen):
        error_line(f"warning: {warning}")
    settings_store = store_settings(store, config)
    with open_store(settings_store.url, initialise=True) as opened:
        display = opened.display_url
    options = ServeOptions(
        store_url=settings_store.url,
        trust_root=str(trust_root),
        tokens=str(tokens) if tokens is not None else None,
        max_body_bytes=max_body_bytes,
        config=str(config) if config is not None else None,
        tetragon_evidence=str(tetragon_evidence) if tetragon_evidence is not None else None,
        tetragon_key=str(tetragon_key) if tetragon_key is not None else None,
        tetragon_function_map=(
            str(tetragon_function_map) if tetragon_function_map is not None else None
        ),
        tetragon_sbom=str(tetragon_sbom) if tetragon_sbom is not None else None,
    )
    error_line(f"stella serve: {where.url} (store {display}, {workers} worker(s))")
    run_server(
        options, where, workers, SlowClientLimits(header_timeout, body_timeout), max_connections
    )


@token_app.command("add")
def token_add(
    tokens: Path = typer.Option(..., "--tokens", help="Tokens file (created if missing)."),
    name: str = typer.Option(..., "--name", help="Who or what holds the token."),
    scope: list[str] = typer.Option(
        ..., "--scope", help="read, write or admin (repeatable; admin includes write, read)."
    ),
    output_format: OutputFormat = format_option(TOKEN_ISSUED),
) -> None:
    """Make a token: printed once on standard output, only its SHA-256 is kept."""
    from ..api import TokenFile

    token_file = TokenFile.load(tokens) if tokens.exists() else TokenFile(path=tokens)
    token = token_file.add(name, list(scope))
    token_file.save(tokens)
    emit(TokenIssued(name, list(scope), token), output_format, TOKEN_ISSUED)


@token_app.command("list")
def token_list(
    tokens: Path = typer.Option(..., "--tokens", help="Tokens file."),
    output_format: OutputFormat = format_option(TOKENS),
) -> None:
    """Names, scopes and creation times (never the tokens: they are not kept)."""
    from ..api.tokens import TokenFile, TokenListing

    emit(TokenListing(tuple(TokenFile.load(tokens).entries)), output_format, TOKENS)


@token_app.command("remove")
def token_remove(
    tokens: Path = typer.Option(..., "--tokens", help="Tokens file."),
    name: str = typer.Option(..., "--name", help="The token to revoke."),
    output_format: OutputFormat = format_option(TOKEN_REMOVED),
) -> None:
    """Revoke a token (a running server reads the file at start: restart it)."""
    from ..api import TokenFile

    token_file = TokenFile.load(tokens)
    token_file.remove(name)
    token_file.save(tokens)
    emit(TokenRemoved(name, str(tokens)), output_format, TOKEN_REMOVED)
