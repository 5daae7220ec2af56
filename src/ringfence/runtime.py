"""The composition root: builds every component from Settings, and starts and stops them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from ringfence.api.app import create_app
from ringfence.api.deps import Services
from ringfence.auth.service import AuthService
from ringfence.clock import Clock, SystemClock
from ringfence.config import Settings
from ringfence.crypto import KeyEncryptionKey, Keyring
from ringfence.provisioning.service import ProvisioningService
from ringfence.storage.engine import make_engine
from ringfence.storage.migrate import Schema, upgrade
from ringfence.storage.repos import SqlKeyStore, SqlStore

logger = logging.getLogger(__name__)

DEMO_TENANT = "demo"
HOUSEKEEPING_INTERVAL_S = 600
DEMO_DOMAIN = "demo.localhost"


@dataclass(frozen=True, slots=True)
class DemoCredentials:
    login: str
    password: str
    admin_token: str


def load_kek(settings: Settings) -> KeyEncryptionKey:
    if settings.keys.kek:
        return KeyEncryptionKey.from_base64(settings.keys.kek)
    return KeyEncryptionKey.load_or_create(settings.kek_path())


class Runtime:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        # The data directory holds the databases and the key file: its owner only.
        settings.storage.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.engine = make_engine(settings.storage.url())
        self.key_engine = make_engine(settings.key_store_url())
        self.store = SqlStore(self.engine)
        self.key_store = SqlKeyStore(self.key_engine)
        self.keyring = Keyring(load_kek(settings), self.key_store)
        self.provisioning = ProvisioningService(self.store, self.keyring, self.clock)
        self.auth = AuthService(self.store, self.provisioning, settings.auth, self.clock)
        self.services = Services(
            provisioning=self.provisioning, auth=self.auth, clock=self.clock, http=settings.http
        )

    async def migrate(self) -> None:
        await upgrade(self.engine, Schema.MAIN)
        await upgrade(self.key_engine, Schema.KEYS)

    def app(self) -> FastAPI:
        return create_app(self.services)

    async def seed_demo(self) -> DemoCredentials | None:
        """On an empty database, a demo tenant with two accounts and an admin token."""
        if await self.provisioning.tenants():
            return None
        await self.provisioning.create_tenant(DEMO_TENANT, "Demo provider", DEMO_DOMAIN)
        password = secrets.token_urlsafe(12)
        await self.provisioning.create_account(
            DEMO_TENANT, "alice", password, display_name="Alice Demo", e164="+15550100001"
        )
        await self.provisioning.create_account(
            DEMO_TENANT, "bob", secrets.token_urlsafe(12), display_name="Bob Demo"
        )
        _, admin_token = await self.auth.create_admin_token("demo")
        return DemoCredentials(f"alice@{DEMO_TENANT}", password, admin_token)

    async def housekeeping(self) -> None:
        """One round of the periodic chores: expired data is deleted, not kept (P15)."""
        swept = await self.auth.sweep_sessions()
        if swept:
            logger.info("deleted %d expired sessions", swept)

    async def _housekeeping_loop(self) -> None:
        while True:
            try:
                await self.housekeeping()
            except Exception:
                logger.exception("housekeeping failed; retrying at the next round")
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)

    async def serve(self) -> None:
        chores = asyncio.create_task(self._housekeeping_loop(), name="housekeeping")
        try:
            await self._serve_http()
        finally:
            chores.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await chores

    async def _serve_http(self) -> None:
        config = uvicorn.Config(
            self.app(),
            host=self.settings.http.host,
            port=self.settings.http.port,
            log_config=None,
            access_log=False,
            server_header=False,
        )
        await uvicorn.Server(config).serve()

    async def aclose(self) -> None:
        await self.engine.dispose()
        await self.key_engine.dispose()
