"""The composition root: builds every component from Settings, and starts and stops them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
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
from ringfence.proxy.engine import Identity, Listener, ProxyEngine
from ringfence.proxy.router import Router, RouterConfig
from ringfence.registrar.rules import RegistrarPolicy
from ringfence.registrar.service import Registrar
from ringfence.sip.digest import DigestAlgorithm
from ringfence.state.location import MemoryLocationService
from ringfence.state.ratelimit import AuthFailureGuard
from ringfence.storage.engine import make_engine
from ringfence.storage.migrate import Schema, upgrade
from ringfence.storage.repos import SqlKeyStore, SqlStore
from ringfence.transport.config import TransportConfig
from ringfence.transport.dns import SipResolver
from ringfence.transport.driver import SipNode
from ringfence.transport.manager import TransportManager

logger = logging.getLogger(__name__)

DEMO_TENANT = "demo"
HOUSEKEEPING_INTERVAL_S = 600
#: How often cached SIP credentials answered past their TTL are reloaded.
CREDENTIALS_REFRESH_S = 1.0
#: Allocations between young-generation collections while serving (CPython's default: 700;
#: see `tune_gc`).
GC_YOUNG_THRESHOLD = 5000
#: Middle-generation collections between full ones (CPython's default: 10).
GC_FULL_THRESHOLD = 100
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


class SipService:
    """The standalone SIP service: transports, registrar, location service, proxy."""

    TRANSPORTS = ("UDP", "TCP", "TLS", "WS")

    def __init__(
        self,
        settings: Settings,
        provisioning: ProvisioningService,
        kek: KeyEncryptionKey,
        clock: Clock,
    ) -> None:
        sip = settings.sip
        self._settings = sip
        self._provisioning = provisioning
        self._kek = kek
        self.transports = TransportManager(
            TransportConfig(
                host=sip.host,
                udp_port=sip.udp_port or None,
                tcp_port=sip.tcp_port or None,
                tls_port=sip.tls_port or None,
                ws_port=sip.ws_port or None,
                tls_cert_file=sip.tls_cert_file,
                tls_key_file=sip.tls_key_file,
                tls_cert_dir=settings.storage.data_dir / "tls",
                tls_hostnames=tuple({sip.public_host or sip.host}),
                rate_per_ip=sip.rate_per_ip,
                udp_receive_buffer_bytes=sip.udp_receive_buffer_bytes,
            ),
            clock=clock,
        )
        self.location = MemoryLocationService()
        # One guard for REGISTER and calls: a guesser cannot switch methods to go on.
        self.auth_guard = AuthFailureGuard(
            sip.auth_failures_per_ip, sip.auth_failures_per_user, sip.auth_failure_window_s
        )
        self.digest_algorithms = tuple(DigestAlgorithm(name) for name in sip.digest_algorithms)
        self.registrar = Registrar(
            provisioning,
            self.location,
            kek.derive("sip-nonce"),
            RegistrarPolicy(
                min_expires=sip.min_expires_s,
                max_expires=sip.max_expires_s,
                default_expires=sip.default_expires_s,
            ),
            nonce_lifetime_s=sip.nonce_lifetime_s,
            digest_algorithms=self.digest_algorithms,
            guard=self.auth_guard,
            clock=clock,
        )
        self.node: SipNode | None = None
        self._credentials: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[int]] = set()

    async def start(self) -> None:
        await self.transports.start()
        sip = self._settings
        host = sip.public_host or sip.host
        listeners = [Listener(transport, host, port) for transport, _, port in self._bound()]
        identity = Identity(tuple(listeners), aliases=frozenset({host.lower(), sip.host}))
        engine = ProxyEngine(identity, self._kek.derive("flow-token"))
        router = Router(
            self._provisioning,
            self.location,
            RouterConfig(
                nonce_secret=self._kek.derive("sip-nonce"),
                nonce_lifetime_s=sip.nonce_lifetime_s,
                trunk=sip.trunk,
                trusted_hosts=frozenset(sip.trusted_hosts),
                digest_algorithms=self.digest_algorithms,
            ),
            flow_open=self.transports.is_open,
            guard=self.auth_guard,
            resolve=SipResolver(sip.dns_servers).resolve,
        )
        self.node = SipNode(
            engine,
            router,
            self.registrar.handle,
            self._provisioning.is_tenant_domain,
            self.transports.send,
        )
        self.transports.on_message = self.node.on_message
        self.transports.on_flow_closed = self._flow_closed
        self._credentials = asyncio.get_running_loop().create_task(
            self._keep_credentials(), name="sip-credentials"
        )

    async def _keep_credentials(self) -> None:
        """Warm the SIP credentials cache, then reload what it answered from stale."""
        try:
            warmed = await self._provisioning.warm_sip_credentials()
            logger.info("SIP credentials of %d accounts loaded", warmed)
            # They live as long as the node: out of every later collection, as start-up is.
            gc.collect()
            gc.freeze()
        except Exception:
            logger.exception("loading SIP credentials failed; they load on first use")
        while True:
            try:
                while await self._provisioning.refresh_sip_credentials():
                    pass
            except Exception:
                logger.exception("refreshing SIP credentials failed; retrying")
            await asyncio.sleep(CREDENTIALS_REFRESH_S)

    def _flow_closed(self, flow_id: str) -> None:
        # RFC 5626 §5.3: a binding on a flow that closed can no longer be reached.
        task = asyncio.get_running_loop().create_task(self.registrar.flow_closed(flow_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _bound(self) -> list[tuple[str, str, int]]:
        """(transport, host, port) of every listener that is running."""
        bound = []
        for transport in self.TRANSPORTS:
            with contextlib.suppress(KeyError):
                host, port = self.transports.local(transport)
                bound.append((transport, host, port))
        return bound

    def describe(self) -> str:
        return "SIP " + ", ".join(f"{t.lower()} {h}:{p}" for t, h, p in self._bound())

    async def aclose(self) -> None:
        if self._credentials is not None:
            self._credentials.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._credentials
        if self.node is not None:
            await self.node.aclose()
        await self.transports.aclose()


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
        kek = load_kek(settings)
        self.keyring = Keyring(kek, self.key_store)
        self.provisioning = ProvisioningService(self.store, self.keyring, self.clock)
        self.auth = AuthService(self.store, self.provisioning, settings.auth, self.clock)
        self.services = Services(
            provisioning=self.provisioning, auth=self.auth, clock=self.clock, http=settings.http
        )
        self.sip: SipService | None = (
            SipService(settings, self.provisioning, kek, self.clock)
            if settings.sip.enabled
            else None
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
        if self.sip is not None:
            # Registrations live on the SIP driver's clock: the event loop's.
            await self.sip.location.purge(asyncio.get_running_loop().time())

    async def _housekeeping_loop(self) -> None:
        while True:
            try:
                await self.housekeeping()
            except Exception:
                logger.exception("housekeeping failed; retrying at the next round")
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)

    async def start_sip(self) -> str | None:
        """Start the SIP listeners; what they are, for the operator."""
        if self.sip is None:
            return None
        await self.sip.start()
        return self.sip.describe()

    async def serve(self) -> None:
        tune_gc()
        chores = asyncio.create_task(self._housekeeping_loop(), name="housekeeping")
        try:
            await self._serve_http()
        finally:
            if self.sip is not None:
                await self.sip.aclose()
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


def tune_gc() -> None:
    """Set the garbage collector up for serving, once everything is loaded.

    What start-up made (modules, the app, the caches) lives as long as the process, so it is
    frozen out of every later collection (`gc.freeze`). A SIP node allocates a few dozen
    containers a message, most of which die by reference counting, and keeps a
    transaction's for 32 s (Timer J, RFC 3261 §17.2.2). Young collections every 5,000
    allocations rather than 700 rescan those less often; much larger (50,000 was tried) makes
    each middle-generation collection long enough to show in the 99th percentile. A full
    collection walks every live transaction: at 300 calls/s each took long enough to push
    the 99th percentile of call setup from under 100 ms to 260 ms, so full collections are
    rarer. Measured with SIPp (benchmarks/sip): with the defaults about a third of the CPU
    per REGISTER went to the collector.
    """
    gc.collect()
    gc.freeze()
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, GC_FULL_THRESHOLD)
