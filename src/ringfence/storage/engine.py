"""Engines: the only place that knows SQLite from PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def make_engine(url: str, *, migration: bool = False) -> AsyncEngine:
    """An async engine for `url`; a SQLite file's folder is created if missing.

    Args:
        url: A SQLAlchemy URL (sqlite+aiosqlite or postgresql+asyncpg).
        migration: An engine for schema migrations only. On SQLite its transactions are
            real ones, DDL included (Python's sqlite3 commits DDL on its own, so a failed
            migration would leave half a schema), and foreign keys are off: rebuilding a
            table drops it, which would cascade to every row that refers to it. SQLite's
            recipe (https://sqlite.org/lang_altertable.html §7); `migrate.upgrade` runs the
            foreign_key_check it ends with.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # Foreign keys are off by default in SQLite; cascades depend on them. WAL lets
            # readers run beside the writer.
            cursor.execute(f"PRAGMA foreign_keys={'OFF' if migration else 'ON'}")
            # Deleted content is overwritten with zeros, not left in free pages: an erased
            # account's rows and a destroyed key must not survive in the file (P19). Debian
            # builds SQLite with this on; other builds do not.
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()
            if migration:
                # SQLAlchemy's recipe for the aiosqlite driver: no implicit BEGIN from the
                # driver, an explicit one from SQLAlchemy (below).
                dbapi_connection.isolation_level = None

        if migration:

            @event.listens_for(engine.sync_engine, "begin")
            def _begin(connection: Any) -> None:
                connection.exec_driver_sql("BEGIN")

        return engine
    return create_async_engine(url, pool_pre_ping=True)
