"""Alembic, run from code: `upgrade(engine, MAIN)` brings a database to the newest schema."""

from __future__ import annotations

import enum
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

_HERE = Path(__file__).parent / "migrations"


class Schema(enum.Enum):
    MAIN = "main"
    KEYS = "keys"


def alembic_config(schema: Schema, connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE / schema.value))
    config.attributes["connection"] = connection
    return config


def run_environment(metadata: MetaData) -> None:
    """The body of each schema's `env.py`: migrate on the connection `upgrade` handed over."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise SystemExit("run migrations with 'ringfence migrate'")
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def upgrade(engine: AsyncEngine, schema: Schema) -> None:
    def run(connection: Connection) -> None:
        command.upgrade(alembic_config(schema, connection), "head")

    async with engine.begin() as connection:
        await connection.run_sync(run)


async def is_current(engine: AsyncEngine, schema: Schema) -> bool:
    """Whether the database is at the newest revision."""

    def check(connection: Connection) -> bool:
        head = ScriptDirectory.from_config(alembic_config(schema)).get_current_head()
        return MigrationContext.configure(connection).get_current_revision() == head

    async with engine.connect() as connection:
        return await connection.run_sync(check)
