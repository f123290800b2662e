"""`stella store`: create, migrate and inspect an observation store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..report.kinds import STORE_INIT, STORE_MIGRATE, STORE_STATUS
from ..report.registry import OutputFormat
from .output import emit, format_option
from .store_options import config_option, store_url_option

# Its help is its line in cli/app.py's GROUPS table.
if TYPE_CHECKING:
    from ..store.base import ObservationStore

app = typer.Typer(no_args_is_help=True)


def _open_unchecked(store: str | None, config: Path | None) -> ObservationStore:
    """The store whatever its schema version (these commands are how it gets one)."""
    from ..store.config import scheme_type, store_settings

    settings = store_settings(store, config)
    kind = scheme_type(settings.url)
    if kind == "sqlite":
        from ..store.sqlite import SqliteStore

        return SqliteStore(settings.url)
    if kind == "postgres":
        from ..store.postgres import PostgresStore

        return PostgresStore(settings.url)
    from ..store.memory import MemoryStore

    return MemoryStore(settings.url)


@app.command("init")
def init(
    store: str | None = store_url_option(),
    config: Path | None = config_option(),
    output_format: OutputFormat = format_option(STORE_INIT),
) -> None:
    """Create the store's schema (the latest version); an initialised store is left as it is."""
    from ..store.base import StoreError
    from ..store.results import StoreInit

    with _open_unchecked(store, config) as opened, opened.migration_lock():
        opened.check_migratable()
        current = opened.schema_version()
        if 0 < current < opened.latest_version():
            raise StoreError(
                f"store {opened.display_url} is initialised at schema version {current}; run "
                "`stella store migrate --store URL`"
            )
        applied = opened.migrate() if current == 0 else []
        version = opened.schema_version()
        emit(StoreInit(opened.display_url, tuple(applied), version), output_format, STORE_INIT)


@app.command("migrate")
def migrate(
    store: str | None = store_url_option(),
    config: Path | None = config_option(),
    output_format: OutputFormat = format_option(STORE_MIGRATE),
) -> None:
    """Apply pending schema migrations in order, each in its own transaction."""
    from ..store.results import StoreMigrate

    with _open_unchecked(store, config) as opened:
        before = opened.schema_version()
        applied = opened.migrate()
        version = opened.schema_version()
        result = StoreMigrate(opened.display_url, before, tuple(applied), version)
        emit(result, output_format, STORE_MIGRATE)


@app.command("status")
def status(
    store: str | None = store_url_option(),
    config: Path | None = config_option(),
    output_format: OutputFormat = format_option(STORE_STATUS),
) -> int:
    """Schema version, pending migrations, what is stored. Exit 0 current, 2 not initialised
    or pending migrations."""
    from ..store.base import StoreStatus
    from ..store.config import store_settings
    from ..store.results import StoreStatusReport
    from ..store.sqlite import LATEST, sqlite_path

    url = store_settings(store, config).url
    if url.startswith("sqlite:") and not sqlite_path(url).exists():
        # Not created by looking at it.
        report = StoreStatus(url, "sqlite", 0, LATEST)
    else:
        with _open_unchecked(store, config) as opened:
            report = opened.status()
    emit(StoreStatusReport(report), output_format, STORE_STATUS)
    return 0 if report.schema_version == report.latest_version else 2
