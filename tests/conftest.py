"""Shared fixtures: a runtime on SQLite or on a throwaway PostgreSQL, and HTTP clients."""

from __future__ import annotations

import base64
import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ringfence.config import AuthSettings, KeySettings, Settings, StorageSettings
from ringfence.runtime import Runtime
from tests.support.clock import FakeClock
from tests.support.postgres import Cluster
from tests.support.tools import missing_tool

BACKENDS = ["sqlite", "postgresql"]
_db_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="ringfence-pg-"))
    try:
        cluster = Cluster(root)
    except FileNotFoundError:
        missing_tool("initdb", "postgresql")
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_settings(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Settings:
    kek = base64.b64encode(os.urandom(32)).decode()
    if backend == "postgresql":
        cluster: Cluster = request.getfixturevalue("pg_cluster")
        n = next(_db_counter)
        cluster.create_database(f"main{n}")
        cluster.create_database(f"keys{n}")
        storage = StorageSettings(data_dir=tmp_path, database_url=cluster.url(f"main{n}"))
        keys = KeySettings(kek=kek, store_url=cluster.url(f"keys{n}"))
    else:
        storage = StorageSettings(data_dir=tmp_path)
        keys = KeySettings(kek=kek)
    return Settings(storage=storage, keys=keys, auth=AuthSettings())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(storage=StorageSettings(data_dir=tmp_path))


@pytest.fixture
async def runtime(
    tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest
) -> AsyncIterator[Runtime]:
    """A migrated runtime on SQLite; on both backends when the test asks for `backend`."""
    backend = request.getfixturevalue("backend") if "backend" in request.fixturenames else "sqlite"
    rt = Runtime(make_settings(tmp_path, backend, request), clock)
    await rt.migrate()
    yield rt
    await rt.aclose()


@dataclass
class Demo:
    tenant: str
    username: str
    password: str
    admin_token: str

    @property
    def login(self) -> str:
        return f"{self.username}@{self.tenant}"


@pytest.fixture
async def demo(runtime: Runtime) -> Demo:
    await runtime.provisioning.create_tenant("acme", "Acme Telecom", "sip.acme.example")
    await runtime.provisioning.create_account(
        "acme", "alice", "correct horse", display_name="Alice Liddell", e164="+41445551234"
    )
    _, admin_token = await runtime.auth.create_admin_token("tests")
    return Demo("acme", "alice", "correct horse", admin_token)


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=runtime.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def admin_headers(demo: Demo) -> dict[str, str]:
    return {"Authorization": f"Bearer {demo.admin_token}"}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh current directory, no RINGFENCE_ variables: the CLI on embedded defaults."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("RINGFENCE_")]:
        monkeypatch.delenv(name)
    return tmp_path
