"""Helpers the API tests share: error bodies, and push instance rows as stored (P3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from ringfence.crypto import Keyring
from ringfence.pushgw.instances import CTX_REPORT, subject_of
from ringfence.runtime import Runtime, load_kek
from ringfence.storage.repos import SqlKeyStore
from ringfence.storage.tables import push_instances


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error body of `response`, checked to be `status` with `code` and a message."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


async def sealed_rows(runtime: Runtime) -> list[tuple[str, bytes]]:
    """(id, sealed report) of every push instance row."""
    async with runtime.engine.connect() as connection:
        rows = await connection.execute(select(push_instances.c.id, push_instances.c.sealed))
        return [(row.id, bytes(row.sealed)) for row in rows]


async def open_with(keys_file: Path, runtime: Runtime, row: tuple[str, bytes]) -> bytes | None:
    """Open a sealed instance row with the key store in `keys_file` (None: no key there)."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{keys_file}")
    try:
        kek = load_kek(runtime.settings)
        ciphers = await Keyring(kek, SqlKeyStore(engine)).ciphers([subject_of(row[0])])
        cipher = ciphers.get(subject_of(row[0]))
        return None if cipher is None else cipher.open(CTX_REPORT, row[1])
    finally:
        await engine.dispose()
