"""Which store to open: `--store URL`, else `observation_store:` of `stellaops.yaml`, else the
embedded SQLite default. URL forms:

    sqlite:///relative/file.sqlite      sqlite:////absolute/file.sqlite
    postgresql://user@host:5432/db      postgresql:///db?host=/run/postgresql   (libpq URIs)
    memory://                           memory://?max_records=N   (in-process only)

The `observation_store:` section (the product documents' keys, top level or under
`runtime_agent:`): `type` (sqlite | postgres | memory | valkey), `url`, `path` (sqlite),
`retention_hours` (default 72), `max_batch_size` (records per stored NDJSON chunk, default 1000).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from ..configfile import refuse_unknown_keys
from ..errors import ConfigError
from .base import ObservationStore, StoreError

DEFAULT_URL: Final = "sqlite:///stella-observations.sqlite"
DEFAULT_RETENTION_HOURS: Final = 72
MAX_RETENTION_HOURS: Final = 876_000  # 100 years: a cutoff before year 1 cannot be computed
DEFAULT_MAX_BATCH_SIZE: Final = 1000
TYPES: Final = ("sqlite", "postgres", "memory", "valkey")
_KEYS: Final = {"type", "url", "path", "retention_hours", "max_batch_size"}

VALKEY_NOT_BUILT: Final = (
    "valkey is not built: it would be a hot buffer in front of the store of record, never the "
    "store itself (docs/store.md); use sqlite or postgres"
)


@dataclass(frozen=True)
class StoreSettings:
    url: str = DEFAULT_URL
    retention_hours: float = DEFAULT_RETENTION_HOURS
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    source: str = "default"  # where the URL came from: --store, the config file, or default

    @property
    def retention(self) -> dt.timedelta:
        return dt.timedelta(hours=self.retention_hours)


def _section(document: dict[str, Any], source: str) -> tuple[dict[str, Any] | None, str]:
    agent = document.get("runtime_agent")
    if isinstance(agent, dict) and "observation_store" in agent:
        if "observation_store" in document:
            # Which one the commands would use is not for us to guess.
            raise ConfigError(
                "given twice, here and at observation_store: keep one",
                path=source,
                field="runtime_agent.observation_store",
            )
        section, where = agent["observation_store"], "runtime_agent.observation_store"
    else:
        section, where = document.get("observation_store"), "observation_store"
    if section is None:
        return None, where
    if not isinstance(section, dict):
        raise ConfigError("expected a mapping", path=source, field=where)
    return section, where


def parse_store_section(section: dict[str, Any], source: str, where: str) -> StoreSettings:
    def fail(message: str, key: str) -> ConfigError:
        return ConfigError(message, path=source, field=f"{where}.{key}")

    refuse_unknown_keys(section, _KEYS, source, f"{where}.")
    kind = section.get("type", "sqlite")
    if kind not in TYPES:
        raise fail(f"expected one of {', '.join(TYPES)}, found {kind!r}", "type")
    if kind == "valkey":
        raise fail(VALKEY_NOT_BUILT, "type")
    url = _section_url(section, kind, fail)
    retention = section.get("retention_hours", DEFAULT_RETENTION_HOURS)
    # `not 0 < x <= MAX`: NaN fails it too (YAML's .nan, .inf are floats).
    if (
        isinstance(retention, bool)
        or not isinstance(retention, int | float)
        or not 0 < retention <= MAX_RETENTION_HOURS
    ):
        raise fail(
            f"expected a positive number of hours, at most {MAX_RETENTION_HOURS} (100 years), "
            f"found {retention!r}",
            "retention_hours",
        )
    batch = section.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise fail(f"expected a positive integer, found {batch!r}", "max_batch_size")
    return StoreSettings(url, float(retention), batch, source)


def _section_url(
    section: dict[str, Any], kind: str, fail: Callable[[str, str], ConfigError]
) -> str:
    """The store's URL: `url`, else made from `path` (sqlite) or the type's default."""
    url = section.get("url")
    if url is not None and not isinstance(url, str):
        raise fail("expected a store URL string", "url")
    path = section.get("path")
    if path is not None and not isinstance(path, str):
        raise fail("expected a file path string", "path")
    if path is not None and (url is not None or kind != "sqlite"):
        # `path` is the sqlite file; beside a url (or for another type) it would be ignored.
        raise fail(
            "path names a sqlite file: give url or path, not both"
            if url is not None
            else f"path is for type sqlite, not {kind}",
            "path",
        )
    if url is None:
        if kind == "postgres":
            raise fail("type postgres needs url: postgresql://…", "url")
        url = "memory://" if kind == "memory" else f"sqlite:///{path}" if path else DEFAULT_URL
    if scheme_type(url) != kind:
        raise fail(f"url {redact(url)} is not a {kind} URL", "url")
    return url


def store_settings(store: str | None, config: str | Path | None) -> StoreSettings:
    """Settings from `--store` and `--config` (the URL of --store wins over the file's)."""
    settings = StoreSettings()
    if config is not None:
        from ..evidence.config import read_stellaops

        section, where = _section(read_stellaops(config), str(config))
        if section is not None:
            settings = parse_store_section(section, str(config), where)
    if store is not None:
        scheme_type(store)  # a bad URL is refused before anything opens
        settings = StoreSettings(
            store, settings.retention_hours, settings.max_batch_size, "--store"
        )
    return settings


def scheme_type(url: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError as exc:  # an unclosed [IPv6 bracket, a port out of range
        raise StoreError(
            f"malformed store URL {redact(url)!r}: {scrub(str(exc), url)}", field="--store"
        ) from exc
    scheme = parts.scheme.lower()
    names = [item.partition("=")[0] for item in parts.query.split("&") if item]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        # libpq keeps the last of a repeated parameter: which server, port or password the
        # store is would be a guess.
        raise StoreError(
            f"store URL {redact(url)!r}: parameter {twice[0]!r} given more than once",
            field="--store",
        )
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        return "postgres"
    if scheme == "memory":
        return "memory"
    if scheme in ("valkey", "redis"):
        raise StoreError(VALKEY_NOT_BUILT, field="--store")
    raise StoreError(
        f"unsupported store URL {redact(url)!r}: expected sqlite:///PATH, postgresql://… or "
        "memory://",
        field="--store",
    )


# libpq takes a password in the URL's user info or as a query parameter.
_SECRET_PARAMETERS: Final = frozenset({"password", "sslpassword"})
_USERINFO_SECRET: Final = re.compile(r"(//[^/?#@:]*:)[^/?#@]*@")
_PARAMETER_SECRET: Final = re.compile(r"((?:^|[?&])(?:ssl)?password=)[^&#]*", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL without its password (for every message that names the store): the user
    info's and a `password=` parameter's, the rest as given (an IPv6 host keeps its brackets).
    A URL that does not parse is redacted as text."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _PARAMETER_SECRET.sub(r"\1***", _USERINFO_SECRET.sub(r"\1***@", url))
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    query = "&".join(
        f"{name}=***" if sep and name.lower() in _SECRET_PARAMETERS else item
        for item in parts.query.split("&")
        for name, sep, _ in [item.partition("=")]
    )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # Not urlunsplit: it drops the empty host of postgresql:///db?host=/run/postgresql.
    shown = f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    return shown + (f"#{parts.fragment}" if parts.fragment else "")


def url_secrets(url: str) -> tuple[str, ...]:
    """The passwords a store URL carries (user info, `password=`, `sslpassword=`), as written
    and percent-decoded: what `scrub` keeps out of messages."""
    found: list[str] = []
    try:
        userinfo, _at, _host = urlsplit(url).netloc.rpartition("@")
    except ValueError:
        userinfo = ""
        match = _USERINFO_SECRET.search(url)
        if match:
            found.append(match.group(0)[len(match.group(1)) : -1])
    if userinfo and ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    found += [match.group(1) for match in _PARAMETER_VALUE.finditer(url)]
    every = {text for raw in found if raw for text in (raw, unquote(raw)) if text}
    return tuple(sorted(every, key=len, reverse=True))


_PARAMETER_VALUE: Final = re.compile(r"(?:^|[?&])(?:ssl)?password=([^&#]*)", re.IGNORECASE)
_QUOTED: Final = re.compile(r'"[^"]*"')
_SCRUB_ANYWHERE: Final = 4  # shorter passwords are hidden only where quoted whole


def scrub(text: str, url: str) -> str:
    """`text` (a message of the server or its client library) without the URL's passwords:
    libpq quotes the token it cannot read, which may be the password itself
    (`invalid percent-encoded token: "pa%zz"`)."""
    secrets = url_secrets(url)
    if not secrets:
        return text

    def quoted(match: re.Match[str]) -> str:
        token = match.group(0)
        return '"***"' if any(secret in token for secret in secrets) else token

    text = _QUOTED.sub(quoted, text)
    for secret in secrets:
        if len(secret) >= _SCRUB_ANYWHERE:
            text = text.replace(secret, "***")
    return text


def open_store(url: str, *, initialise: bool = False) -> ObservationStore:
    """Open the store at `url`. With `initialise`, an empty store is given the current
    schema; otherwise its schema must be the current one (`require_schema`)."""
    kind = scheme_type(url)
    store: ObservationStore
    if kind == "sqlite":
        from .sqlite import SqliteStore, sqlite_path

        if not initialise and not sqlite_path(url).exists():
            raise StoreError(
                f"store {url} does not exist; run `stella store init --store URL` or ingest"
            )
        store = SqliteStore(url)
    elif kind == "postgres":
        from .postgres import PostgresStore

        store = PostgresStore(url)
    else:
        from .memory import MemoryStore

        store = MemoryStore(url)
    try:
        if initialise:
            with store.migration_lock():  # not another run's half-done migration
                if store.schema_version() == 0:
                    store.migrate()
                store.require_schema()
        else:
            store.require_schema()
    except BaseException:
        store.close()
        raise
    return store
