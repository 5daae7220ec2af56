"""Alembic, run from code: `upgrade(engine, MAIN)` brings a database to the newest schema."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.ext.asyncio import AsyncEngine

_HERE = Path(__file__).parent / "migrations"


class MigrationError(ValueError):
    """A migration cannot run as things are; nothing was changed (the message says why)."""


class Schema(enum.Enum):
    MAIN = "main"
    KEYS = "keys"


def alembic_config(
    schema: Schema, connection: Connection | None = None, data: Mapping[str, Any] | None = None
) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE / schema.value))
    config.attributes["connection"] = connection
    # What a data migration needs from outside the database (sealed values: keys are not
    # the migration's to hold); each revision's docstring names what it reads.
    config.attributes.update(data or {})
    return config


def run_environment(metadata: MetaData) -> None:
    """The body of each schema's `env.py`: migrate on the connection `upgrade` handed over."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise SystemExit("run migrations with 'ringfence migrate'")
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def upgrade(
    engine: AsyncEngine, schema: Schema, data: Mapping[str, Any] | None = None
) -> None:
    def run(connection: Connection) -> None:
        command.upgrade(alembic_config(schema, connection, data), "head")
        if connection.dialect.name == "sqlite":
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise RuntimeError(f"the migration broke {len(broken)} foreign key(s)")

    # One transaction for every revision: on an engine made with `migration=True` (see
    # storage.engine), a failure leaves the database as it was, SQLite included.
    async with engine.begin() as connection:
        await connection.run_sync(run)


async def pending(engine: AsyncEngine, schema: Schema) -> list[str]:
    """The revisions an upgrade would apply, oldest first."""

    def check(connection: Connection) -> list[str]:
        script = ScriptDirectory.from_config(alembic_config(schema))
        current = MigrationContext.configure(connection).get_current_revision()
        ahead = script.iterate_revisions("head", current)
        return [revision.revision for revision in reversed(list(ahead))]

    async with engine.connect() as connection:
        return await connection.run_sync(check)


async def clear_identifiers(
    engine: AsyncEngine,
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """What revision 0003 seals or hashes, read before it runs.

    Returns:
        (account id, user name) pairs and (device id, install id) pairs.
    """
    async with engine.connect() as connection:
        names = await connection.execute(text("SELECT id, username FROM accounts"))
        installs = await connection.execute(text("SELECT id, install_id FROM devices"))
        return [(r[0], r[1]) for r in names], [(r[0], r[1]) for r in installs]


async def is_current(engine: AsyncEngine, schema: Schema) -> bool:
    """Whether the database is at the newest revision."""

    def check(connection: Connection) -> bool:
        head = ScriptDirectory.from_config(alembic_config(schema)).get_current_head()
        return MigrationContext.configure(connection).get_current_revision() == head

    async with engine.connect() as connection:
        return await connection.run_sync(check)
