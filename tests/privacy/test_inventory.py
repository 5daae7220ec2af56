"""The data inventory: every table declared, every declaration real (issue #7, P15)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Connection, inspect

from ringfence.config import KeySettings, Settings, StorageSettings
from ringfence.inventory import Category, LegalBasis, NotPersonal, Stored
from ringfence.privacy.inventory import Inventory, check, render
from ringfence.runtime import Runtime, data_inventory

BIN = Path(sys.executable).parent / "ringfence"

THING = Category("things", "things", "testing", LegalBasis.CONTRACT, "a day")


def columns_of(connection: Connection) -> dict[str, list[str]]:
    inspector = inspect(connection)
    return {
        table: [column["name"] for column in inspector.get_columns(table)]
        for table in inspector.get_table_names()
        if table != "alembic_version"
    }


@pytest.mark.promise("P15")
async def test_every_table_of_both_migrated_databases_is_declared(tmp_path: Path) -> None:
    # The schema as migrations make it, not as the code thinks it is: a migration that adds
    # a table or a column nobody declared fails here.
    runtime = Runtime(Settings(storage=StorageSettings(data_dir=tmp_path), keys=KeySettings()))
    try:
        await runtime.migrate()
        async with runtime.engine.connect() as main, runtime.key_engine.connect() as keys:
            tables = await main.run_sync(columns_of) | await keys.run_sync(columns_of)
    finally:
        await runtime.aclose()
    assert {"accounts", "devices", "sessions", "subject_keys"} <= set(tables)
    assert check(data_inventory(), tables) == []


def test_what_a_service_forgot_to_declare_is_named() -> None:
    inventory = Inventory.of(
        [
            Stored(THING, "things", ("id", "name"), sealed=False),
            Stored(THING, "things", ("gone",), sealed=False),
            Stored(THING, "nowhere", ("id",), sealed=False),
            Stored(
                Category("things", "other", "testing", LegalBasis.CONSENT, "a day"),
                None,
                ("x",),
                sealed=False,
                where="a cache",
            ),
            Stored(THING, None, ("y",), sealed=False),
            NotPersonal("both", "say"),
            Stored(THING, "both", ("id",), sealed=False),
            NotPersonal("ghost", "gone"),
        ]
    )
    tables = {
        "things": ["id", "name", "email"],
        "both": ["id"],
        "new_table": ["id", "phone"],
    }
    assert check(inventory, tables) == [
        "declared column things.gone does not exist",
        "declared table nowhere does not exist",
        "category 'things' is defined twice, differently",
        "things: memory store without a component named",
        "declared table ghost does not exist",
        "table both is declared both personal and not personal",
        "table new_table is not declared by any service",
        "column things.email is not declared",
    ]


def test_the_command_prints_every_category() -> None:
    run = subprocess.run(
        [str(BIN), "privacy", "inventory"], capture_output=True, text=True, check=True
    )
    assert run.stdout.rstrip("\n") == render(data_inventory())
    for category in data_inventory().categories():
        assert f"{category.name}: {category.holds}" in run.stdout
    assert (
        "kept in:   table accounts (username_sealed, display_name_sealed, e164_sealed, "
        "email_sealed), sealed" in (run.stdout)
    )
    assert "basis:     legitimate interest" in run.stdout
    assert "table tenants: the providers" in run.stdout
