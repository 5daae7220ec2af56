"""The composition root: builds every component from Settings, and starts and stops them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from ringfence.api.app import create_app
from ringfence.api.deps import Services
from ringfence.auth import inventory as auth_inventory
from ringfence.auth.service import AuthService
from ringfence.blobs import BlobSettings, open_store
from ringfence.clock import Clock, SystemClock
from ringfence.config import Settings
from ringfence.crypto import KeyEncryptionKey, Keyring, inventory as crypto_inventory
from ringfence.files import inventory as files_inventory
from ringfence.files.service import FileService
from ringfence.mail import SMTPMailer
from ringfence.messaging import inventory as messaging_inventory
from ringfence.messaging.held import HeldMessages
from ringfence.messaging.history import MessageHistory, Outgoing, Sent
from ringfence.overlay.contact import ContactTokens
from ringfence.privacy import (
    disclosures,
    erasure,
    policy,
    postmortem,
    requests,
    verification,
)
from ringfence.privacy.disclosures import DisclosureRegister
from ringfence.privacy.erasure import Erasure
from ringfence.privacy.inventory import Inventory
from ringfence.privacy.policy import Policies
from ringfence.privacy.postmortem import PostMortem
from ringfence.privacy.requests import SubjectRights
from ringfence.privacy.retention import RetentionRules, RetentionSweeper
from ringfence.privacy.verification import CodeVerifier
from ringfence.provisioning import inventory as provisioning_inventory
from ringfence.provisioning.models import UpstreamTransport
from ringfence.provisioning.service import ProvisioningService
from ringfence.proxy import inventory as proxy_inventory
from ringfence.proxy.engine import Identity, Listener, ProxyEngine, Target
from ringfence.proxy.parking import Parking, Sleeper, sleepers_of
from ringfence.proxy.refresh import RefreshSchedule
from ringfence.proxy.router import Router, RouterConfig
from ringfence.push.dispatcher import make_dispatcher
from ringfence.push.waker import PushWaker
from ringfence.pushgw import inventory as pushgw_inventory
from ringfence.pushgw.instances import PushInstances
from ringfence.pushgw.traces import PushTraces
from ringfence.registrar.fast import FastRegister
from ringfence.registrar.rules import RegistrarPolicy
from ringfence.registrar.service import Registrar
from ringfence.sip.digest import DigestAlgorithm
from ringfence.sip.errors import ParseError
from ringfence.sip.message import Message, Request, Response, serialize
from ringfence.sip.parser import parse_datagram
from ringfence.sip.transaction import Address
from ringfence.sms import SMSGateway
from ringfence.state import inventory as state_inventory
from ringfence.state.location import (
    Binding,
    MemoryLocationService,
    ReplicaLocationService,
    decode_bindings,
    encode_bindings,
)
from ringfence.state.ratelimit import AuthFailureGuard
from ringfence.storage.engine import make_engine
from ringfence.storage.migrate import (
    MigrationError,
    Schema,
    clear_identifiers,
    pending,
    upgrade,
)
from ringfence.storage.repos import (
    SqlFileStore,
    SqlHeldStore,
    SqlHistoryStore,
    SqlInstanceStore,
    SqlKeyStore,
    SqlPrivacyStore,
    SqlStore,
    SqlTraceStore,
)
from ringfence.transport import flow, inventory as transport_inventory
from ringfence.transport.cluster import (
    Cluster,
    Frame,
    decode_message,
    decode_send,
    encode_frame,
    encode_message,
    encode_send,
    flow_worker,
    raw_shard_key,
    shard_key,
)
from ringfence.transport.config import TransportConfig
from ringfence.transport.dns import SipResolver
from ringfence.transport.driver import SipNode
from ringfence.transport.manager import TransportManager, bind_sockets
from ringfence.transport.overlay import InstanceDirectory, OverlayService

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
#: Rounds of the one-second SIP loop between full collections (see `_Generations`).
FULL_GC_ROUNDS = 300
#: How long the parent waits for its SIP workers to stop before killing them.
WORKER_STOP_S = 5.0
#: How long the parent waits for its SIP workers to start serving.
WORKER_START_S = 60.0
#: How often the parent checks that its SIP workers are alive.
WORKER_WATCH_S = 1.0
WORKER_POLL_S = 0.1


class WorkerError(RuntimeError):
    """A SIP worker process could not be started."""


@dataclass(frozen=True)
class WorkerPlan:
    """One SIP worker's place in the node (`sip.workers`, `transport.cluster`).

    Attributes:
        index: The worker's number, 0 (the parent) .. size-1.
        size: How many workers the node runs.
        sockets: The listening sockets the parent bound, by transport name.
        peers: A connected stream socket to each other worker, by its number.
    """

    index: int
    size: int
    sockets: dict[str, socket.socket] = field(default_factory=dict)
    peers: dict[int, socket.socket] = field(default_factory=dict)


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
        *,
        worker: int = 0,
        push_instances: PushInstances | None = None,
        held_messages: HeldMessages | None = None,
        traces: PushTraces | None = None,
        history: MessageHistory | None = None,
    ) -> None:
        sip = settings.sip
        self._traces = traces
        self._history = history
        self._instances = push_instances
        self._held = held_messages
        self._settings = sip
        self.worker = worker
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
        self.location: MemoryLocationService = (
            ReplicaLocationService(self._publish) if sip.workers > 1 else MemoryLocationService()
        )
        self.cluster: Cluster | None = None
        self._ready_workers: set[int] = set()
        self._all_ready = asyncio.Event()
        # The datagram whose shard key `_on_datagram` found to be ours (see `_on_message`).
        self._checked: bytes | None = None
        # One guard for REGISTER and calls: a guesser cannot switch methods to go on.
        self.auth_guard = AuthFailureGuard(
            sip.auth_failures_per_ip, sip.auth_failures_per_user, sip.auth_failure_window_s
        )
        self.digest_algorithms = tuple(DigestAlgorithm(name) for name in sip.digest_algorithms)
        # RFC 8599: pushes wake sleeping devices; their requests wait `call_wait_s`.
        self._push = settings.push
        dispatcher = make_dispatcher(settings.push, clock)
        self.waker = PushWaker(
            dispatcher, clock, ring_window_s=settings.push.call_wait_s, prune=self._prune
        )
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
            nonce_scope=worker,
            push_services=dispatcher.services,
        )
        self.node: SipNode | None = None
        #: Overlay mode's upstream registrations (the first worker only).
        self.overlay: OverlayService | None = None
        self._overlay_settings = settings.overlay
        self._clock = clock
        self._resolver = SipResolver(sip.dns_servers)
        self.fast_register: FastRegister
        self._credentials: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[int]] = set()

    async def start(self, plan: WorkerPlan | None = None) -> None:
        """Start listening: alone, or as one worker of `plan` on the sockets it holds."""
        if plan is not None and plan.size > 1:
            flow.set_worker(plan.index)
            self.cluster = Cluster(plan.index, plan.size, plan.peers)
            self.cluster.on_frame = self._on_frame
            await self.cluster.start()
        await self.transports.start(plan.sockets if plan is not None else None)
        sip = self._settings
        host = sip.public_host or sip.host
        listeners = [Listener(transport, host, port) for transport, _, port in self._bound()]
        identity = Identity(tuple(listeners), aliases=frozenset({host.lower(), sip.host}))
        engine = ProxyEngine(identity, self._kek.derive("flow-token"))
        overlay = self._overlay_for(listeners)
        router = Router(
            self._provisioning,
            self.location,
            RouterConfig(
                nonce_secret=self._kek.derive("sip-nonce"),
                nonce_lifetime_s=sip.nonce_lifetime_s,
                trunk=sip.trunk,
                trusted_hosts=frozenset(sip.trusted_hosts),
                digest_algorithms=self.digest_algorithms,
                nonce_scope=self.worker,
            ),
            flow_open=self.transports.is_open if self.cluster is None else self._is_open,
            guard=self.auth_guard,
            resolve=self._resolver.resolve,
            devices=self._instances,
            overlay=overlay,
        )
        self.node = SipNode(
            engine,
            router,
            self.registrar.handle,
            self._provisioning.is_tenant_domain,
            self.transports.send if self.cluster is None else self._send,
            waker=self.waker,
            parking=Parking(self._push.call_wait_s),
            messages=self._held,
            # Every worker sees every binding change: the first alone pushes refreshes.
            refreshes=RefreshSchedule() if self.worker == 0 else None,
            traces=self._traces,
            history=self._history,
        )
        node = self.node
        loop = asyncio.get_running_loop()

        def bindings_changed(aor: str, bindings: tuple[Binding, ...]) -> None:
            # After the registrar's change is complete, never inside it.
            if node.watches(aor, bindings):
                loop.call_soon(node.bindings_changed, aor, bindings)

        self.location.on_change = bindings_changed
        config = self.transports.config
        self.fast_register = FastRegister(
            self.registrar,
            self.location,
            self._provisioning.cached_tenant_domain,
            lambda key: engine.layer.state(key) is not None,
            max_header_bytes=config.max_header_bytes,
            max_headers=config.max_headers,
        )
        self.transports.on_datagram = self._on_datagram
        if self.cluster is None:
            self.transports.on_message = self.node.on_message
        else:
            self.transports.on_message = self._on_message
        self.transports.on_flow_closed = self._flow_closed
        self._credentials = asyncio.get_running_loop().create_task(
            self._keep_credentials(), name="sip-credentials"
        )

    def _overlay_for(
        self, listeners: Sequence[Listener]
    ) -> OverlayService | InstanceDirectory | None:
        """Overlay mode: who recognises the Contacts registered on PBXes for devices.

        The first worker keeps the upstream registrations; the others read the store.
        """
        if self._instances is None:
            return None
        tokens = ContactTokens(self._kek.derive("overlay-contact"))
        if self.worker != 0:
            return InstanceDirectory(
                self._instances, self._provisioning, tokens, self._overlay_settings, self._clock
            )
        by_transport = {listener.transport: listener for listener in listeners}

        def contact(user: str, transport: UpstreamTransport) -> str:
            # The PBX reaches us the way we reach it (RFC 3261 §18.1.1: TCP and TLS
            # connections are ours to open again; UDP needs the port).
            listener = by_transport.get(transport.value.upper()) or listeners[0]
            name = listener.transport.lower()
            return f"sip:{user}@{listener.host}:{listener.port};transport={name}"

        async def send(request: Request, target: Target) -> tuple[int, Response | None]:
            assert self.node is not None
            return await self.node.request(request, target)

        self.overlay = OverlayService(
            self._instances,
            self._provisioning,
            tokens,
            send,
            self._resolver.resolve,
            contact,
            self._clock,
            self._overlay_settings,
            notifier=self.waker,
        )
        self._instances.listeners.append(self.overlay)
        return self.overlay

    async def _keep_credentials(self) -> None:
        """Warm the SIP credentials cache, then reload what it answered from stale.

        Also learns, at start and then each round, which AORs have messages held (another
        worker may have held them): their next registration delivers them; and which
        accounts have push instances (reported to the HTTP process).
        """
        try:
            warmed = await self._provisioning.warm_sip_credentials()
            logger.info("SIP credentials of %d accounts loaded", warmed)
            # They live as long as the node: out of every later collection, as start-up is.
            gc.collect()
            gc.freeze()
        except Exception:
            logger.exception("loading SIP credentials failed; they load on first use")
        if self.overlay is not None:
            # After the warm-up: the restore finds every account in the cache.
            try:
                restored = await self.overlay.start()
                logger.info("overlay: %d upstream registrations to keep", restored)
            except Exception:
                logger.exception("overlay: restoring the upstream registrations failed")
        rounds = 0
        while True:
            rounds += 1
            GENERATIONS.tend(rounds)
            try:
                if self._held is not None:
                    await self._held.refresh()
                # Other workers learn of instances reported to the HTTP process; this one
                # hears of them directly, and a look every 10 s catches the rest (reading
                # every account id each second cost 20-25 ms with 10,000 instances).
                if self._instances is not None and (self.worker != 0 or rounds % 10 == 1):
                    await self._instances.refresh()
                if self._traces is not None:
                    await self._traces.flush()
                if self._history is not None:
                    await self._history.flush()
                while await self._provisioning.refresh_sip_credentials():
                    pass
            except Exception:
                logger.exception("refreshing SIP credentials failed; retrying")
            await asyncio.sleep(CREDENTIALS_REFRESH_S)

    async def _prune(self, aor: str, sleeper: Sleeper) -> None:
        """A push service called a device's token dead: forget its binding and instance."""
        now = asyncio.get_running_loop().time()
        bindings = await self.location.lookup(aor, now)
        device = sleeper.device
        kept = [b for b in bindings if all(s.device != device for s in sleepers_of([b]))]
        if len(kept) != len(bindings):
            await self.location.replace(aor, kept, now)
            logger.info("a push binding was removed: its token is dead")
        user, _, domain = aor.removeprefix("sip:").partition("@")
        credentials = await self._provisioning.sip_credentials(domain, user)
        token = sleeper.push.token_for_call()
        if (
            self._instances is not None
            and credentials is not None
            and token
            and await self._instances.forget_token(credentials.account_id, token)
        ):
            logger.info("a push instance was erased: its token is dead")

    def _flow_closed(self, flow_id: str) -> None:
        # RFC 5626 §5.3: a binding on a flow that closed can no longer be reached.
        if self.cluster is not None:
            self.cluster.broadcast(encode_frame(Frame.FLOW_CLOSED, flow_id.encode()))
        self._forget_flow(flow_id)

    def _forget_flow(self, flow_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self.registrar.flow_closed(flow_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one worker of several (transport.cluster) ------------------------------------------

    def _on_datagram(self, data: bytes, source: Address) -> bool:
        """Take a UDP datagram before it is parsed: True when it needs nothing more.

        With several workers, one whose shard key its bytes tell goes to its owner unparsed.
        A plain REGISTER is answered on the fast path (`registrar.fast`).
        """
        cluster = self.cluster
        if cluster is not None:
            key = raw_shard_key(data)
            if key is None:
                return False  # parsed here, then `_on_message` finds the owner
            owner = cluster.owner(key)
            if owner != cluster.index:
                cluster.send(owner, encode_message(source, data))
                return True
        if self._answer_fast(data, source):
            return True
        if cluster is not None:
            self._checked = data
        return False

    def _answer_fast(self, data: bytes, source: Address) -> bool:
        if source.transport != "UDP":
            return False
        answer = self.fast_register.handle(data, source, asyncio.get_running_loop().time())
        if answer is None:
            return False
        self.transports.send_datagram(answer, source)
        return True

    def _on_message(self, message: Message, source: Address) -> None:
        cluster, node = self.cluster, self.node
        assert cluster is not None
        assert node is not None
        checked, self._checked = self._checked, None
        if checked is None or message.raw is not checked:
            owner = cluster.owner(shard_key(message))
            if owner != cluster.index:
                cluster.send(owner, encode_message(source, message.raw or serialize(message)))
                return
        node.on_message(message, source)

    def _on_frame(self, peer: int, kind: Frame, body: bytes) -> None:
        node = self.node
        if kind is Frame.MESSAGE:
            source, data = decode_message(body)
            if self._answer_fast(data, source):
                return
            config = self.transports.config
            try:
                message = parse_datagram(
                    data, max_header_bytes=config.max_header_bytes, max_headers=config.max_headers
                )
            except ParseError:
                return  # the sender checked only its shard key
            if node is not None:
                node.on_message(message, source)
        elif kind is Frame.SEND:
            flow_id, data = decode_send(body)
            if not self.transports.send_on_flow(flow_id, data):
                logger.debug("worker %d asked to send on a flow that is gone", peer)
        elif kind is Frame.BINDINGS:
            aor, bindings = decode_bindings(body)
            assert isinstance(self.location, ReplicaLocationService)
            self.location.apply(aor, bindings, asyncio.get_running_loop().time())
        elif kind is Frame.FLOW_CLOSED:
            self._forget_flow(body.decode())
        elif kind is Frame.READY:
            self._ready_workers.add(peer)
            if self.cluster is not None and len(self._ready_workers) == self.cluster.size - 1:
                self._all_ready.set()

    def announce_ready(self) -> None:
        """Tell worker 0 that this worker serves (`wait_for_workers`)."""
        if self.cluster is not None and self.cluster.index != 0:
            self.cluster.send(0, encode_frame(Frame.READY, b""))

    async def wait_for_workers(self, timeout_s: float) -> None:
        """Wait until every other worker has announced itself ready.

        Raises:
            TimeoutError: one has not within `timeout_s`.
        """
        async with asyncio.timeout(timeout_s):
            await self._all_ready.wait()

    def _publish(self, aor: str, bindings: tuple[Binding, ...]) -> None:
        if self.cluster is not None:
            self.cluster.broadcast(encode_frame(Frame.BINDINGS, encode_bindings(aor, bindings)))

    def _send(self, address: Address, message: Message) -> bool:
        cluster = self.cluster
        assert cluster is not None
        flow_id = address.flow
        if flow_id is not None:
            owner = flow_worker(flow_id)
            if owner is not None and owner != cluster.index:
                # The connection is another worker's (RFC 5626: answer over the flow).
                if not self._is_open(flow_id):
                    return False
                return cluster.send(owner, encode_send(flow_id, serialize(message)))
        return self.transports.send(address, message)

    def _is_open(self, flow_id: str) -> bool:
        cluster = self.cluster
        owner = flow_worker(flow_id)
        if cluster is None or owner is None or owner == cluster.index:
            return self.transports.is_open(flow_id)
        assert isinstance(self.location, ReplicaLocationService)
        return not self.location.flow_closed(flow_id)

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
        if self.overlay is not None:
            if self._instances is not None and self.overlay in self._instances.listeners:
                self._instances.listeners.remove(self.overlay)
            await self.overlay.aclose()
        if self.node is not None:
            await self.node.aclose()
        for queued in (self._traces, self._history):
            if queued is not None:
                with contextlib.suppress(Exception):
                    await queued.flush()
        await self.waker.aclose()
        await self.transports.aclose()
        if self.cluster is not None:
            await self.cluster.aclose()


class Runtime:
    """Every component of one ringfence process.

    Args:
        settings: The settings in force.
        clock: The wall clock (tests pass a fake one).
        worker: Which SIP worker this process is: 0 for the parent (HTTP API and the first
            SIP worker), 1 .. sip.workers-1 for the SIP-only processes it starts.
        worker_command: How the parent starts another worker: the command line to which
            ``--plan JSON`` is added (see `cli.sip_worker`). None: sip.workers must be 1.
    """

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        *,
        worker: int = 0,
        worker_command: Sequence[str] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self._worker_command = list(worker_command) if worker_command is not None else None
        self._workers: list[subprocess.Popen[bytes]] = []
        self._alive_fds: list[int] = []
        self._watch: asyncio.Task[None] | None = None
        # The data directory holds the databases and the key file: its owner only.
        settings.storage.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.engine = make_engine(settings.storage.url())
        self.key_engine = make_engine(settings.key_store_url())
        self.store = SqlStore(self.engine)
        self.key_store = SqlKeyStore(self.key_engine)
        kek = load_kek(settings)
        self.keyring = Keyring(kek, self.key_store)
        self.provisioning = ProvisioningService(self.store, self.keyring, self.clock)
        self.push_instances = PushInstances(SqlInstanceStore(self.engine), self.keyring, self.clock)
        # Erasing an account or switching its push off erases its instances (P3).
        self.provisioning.listeners.append(self.push_instances)
        self.held_messages = HeldMessages(SqlHeldStore(self.engine), self.keyring, self.clock)
        self.push_traces = PushTraces(SqlTraceStore(self.engine), self.keyring, self.clock)
        self.history = MessageHistory(SqlHistoryStore(self.engine), self.keyring, self.clock)
        stored = settings.files
        secret = stored.s3_secret_access_key
        self.blobs = open_store(
            BlobSettings(
                backend=stored.backend,
                directory=stored.directory,
                s3_endpoint_url=stored.s3_endpoint_url,
                s3_bucket=stored.s3_bucket,
                s3_region=stored.s3_region,
                s3_access_key_id=stored.s3_access_key_id,
                s3_secret_access_key=secret.get_secret_value() if secret else None,
                s3_part_bytes=stored.s3_part_bytes,
            ),
            settings.storage.data_dir,
        )
        self.files = FileService(
            SqlFileStore(self.engine), self.blobs, self.clock, kek.derive("file-url")
        )
        # An erased account's files go with it (P19); it leaves the files sent to it.
        self.provisioning.listeners.append(self.files)
        self.auth = AuthService(self.store, self.provisioning, settings.auth, self.clock)
        privacy_store = SqlPrivacyStore(self.engine)
        self.disclosures = DisclosureRegister(privacy_store, self.provisioning, self.clock)
        self.erasure = Erasure(
            privacy_store,
            self.provisioning,
            self.clock,
            erased_with_account=[c.name for c in ACCOUNT_CATEGORIES],
        )
        kept = settings.privacy
        self.retention = RetentionSweeper(
            privacy_store,
            self.clock,
            RetentionRules(
                disclosures_days=kept.disclosures_days,
                released_holds_days=kept.released_holds_days,
                destructions_days=kept.destructions_days,
                closed_requests_days=kept.closed_requests_days,
            ),
        )
        self.sms = SMSGateway(settings.sms) if settings.sms.url else None
        self.codes = CodeVerifier(
            privacy_store, self.sms, kek.derive("verification-code"), self.clock
        )
        self.subject_rights = SubjectRights(
            privacy_store,
            self.provisioning,
            privacy_store,
            self.erasure,
            list(ACCOUNT_CATEGORIES),
            self.clock,
            documents=privacy_store,
            keys=self.keyring,
            codes=self.codes,
        )
        self.subject_rights.exporters.update(
            {
                messaging_inventory.MESSAGE_HISTORY.name: self.history.export,
                files_inventory.ATTACHMENTS.name: self.files.export,
            }
        )
        self.postmortem = PostMortem(
            privacy_store, self.keyring, self.provisioning, self.subject_rights, self.clock
        )
        self.policies = Policies(
            privacy_store,
            self.provisioning,
            SMTPMailer(settings.smtp) if settings.smtp.host else None,
            self.clock,
            min_notice_days=settings.privacy.min_notice_days,
        )
        self.services = Services(
            provisioning=self.provisioning,
            auth=self.auth,
            clock=self.clock,
            http=settings.http,
            disclosures=self.disclosures,
            erasure=self.erasure,
            subject_rights=self.subject_rights,
            postmortem=self.postmortem,
            policies=self.policies,
            push_instances=self.push_instances,
            push_traces=self.push_traces,
            history=self.history,
            messages=_NodeSender(self),
            files=self.files,
        )
        self.sip: SipService | None = (
            SipService(
                settings,
                self.provisioning,
                kek,
                self.clock,
                worker=worker,
                push_instances=self.push_instances,
                held_messages=self.held_messages,
                traces=self.push_traces,
                history=self.history,
            )
            if settings.sip.enabled
            else None
        )

    async def migrate(self, *, finish_erasures: bool = False) -> None:
        """Bring both databases to the newest schema, each in one transaction.

        Args:
            finish_erasures: Storage revision 0003 finds accounts whose key is destroyed
                (an erasure a stopped node did not finish): erase and record them. Without
                it, such accounts stop the migration, since a key store that is not this
                database's looks the same.

        Raises:
            MigrationError: as `finish_erasures` says; nothing was changed.
        """
        main = make_engine(self.settings.storage.url(), migration=True)
        keys = make_engine(self.settings.key_store_url(), migration=True)
        try:
            # Keys first: a data migration of the main database may need them (0003).
            await upgrade(keys, Schema.KEYS)
            data: dict[str, Any] = {}
            ahead = await pending(main, Schema.MAIN)
            if "0003" in ahead and "0001" not in ahead:
                data = await self._sealing_0003(main, finish_erasures=finish_erasures)
            await upgrade(main, Schema.MAIN, data)
        finally:
            await main.dispose()
            await keys.dispose()

    async def _sealing_0003(self, main: AsyncEngine, *, finish_erasures: bool) -> dict[str, Any]:
        """What storage revision 0003 needs from the keyring (see its docstring)."""
        names, installs = await clear_identifiers(main)
        sealed = await self.provisioning.seal_usernames(names)
        keyless = [account for account, _ in names if account not in sealed]
        if keyless and not finish_erasures:
            raise MigrationError(
                f"{len(keyless)} of {len(names)} accounts have no key in the key store. If "
                "[keys] points to this database's key store, they are erasures a stopped node "
                "did not finish: 'ringfence migrate --finish-erasures' completes them. "
                "Nothing was changed."
            )
        return {
            "sealed_usernames": sealed,
            "install_keys": {
                device: self.provisioning.install_key(install) for device, install in installs
            },
            "finish_erasures": keyless,
            "erased_at": self.clock.now(),
            "erased_categories": [category.name for category in ACCOUNT_CATEGORIES],
        }

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
        deleted = (await self.retention.sweep()).counts
        for category, count in deleted.items():
            if count:
                logger.info("retention: deleted %d record(s) of %s", count, category)
        instances = await self.push_instances.sweep()
        if instances:
            logger.info("erased %d expired push instance(s)", instances)
        traces = await self.push_traces.sweep()
        if traces:
            logger.info("deleted %d push trace(s) older than 7 days", traces)
        old_files = await self.files.sweep()
        if old_files:
            logger.info("deleted %d expired file(s) or abandoned upload(s)", old_files)
        old_messages = await self.history.sweep()
        if old_messages:
            logger.info("deleted %d message(s) past their retention", old_messages)
        undelivered = await self.held_messages.sweep()
        if undelivered:
            logger.info("deleted %d held message(s) no device came for", undelivered)
        codes = await self.codes.sweep()
        if codes:
            logger.info("deleted %d expired verification code(s)", codes)
        overdue = await self.subject_rights.overdue()
        if overdue:
            # P21: answered within 30 days. The alert counts; it names no one.
            logger.warning("%d data-subject request(s) overdue", len(overdue))
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
        """Start the SIP listeners (and the other workers); what they are, for the operator."""
        if self.sip is None:
            return None
        size = self.settings.sip.workers
        if size == 1:
            await self.sip.start()
            return self.sip.describe()
        if self._worker_command is None:
            raise ValueError("sip.workers > 1 needs a command to start the other workers")
        sockets = bind_sockets(self.sip.transports.config)
        pairs = {(i, j): socket.socketpair() for i in range(size) for j in range(i + 1, size)}

        def links(worker: int) -> dict[int, socket.socket]:
            ends = {}
            for (i, j), (a, b) in pairs.items():
                if worker == i:
                    ends[j] = a
                elif worker == j:
                    ends[i] = b
            return ends

        try:
            # The parent's listeners first: a self-signed certificate is made once, here.
            await self.sip.start(WorkerPlan(0, size, sockets, links(0)))
            for worker in range(1, size):
                self._workers.append(self._spawn(worker, size, sockets, links(worker)))
        finally:
            # The children hold their own copies now; the parent keeps only its own ends.
            for worker in range(1, size):
                for end in links(worker).values():
                    end.close()
        self._watch = asyncio.get_running_loop().create_task(self._watch_workers())
        # Ready means every worker serves: what a worker owns would wait until it does.
        await self._wait_for_workers()
        return f"{self.sip.describe()} ({size} workers)"

    def _spawn(
        self,
        worker: int,
        size: int,
        sockets: dict[str, socket.socket],
        peers: dict[int, socket.socket],
    ) -> subprocess.Popen[bytes]:
        assert self._worker_command is not None
        # The child reads this pipe and stops when it ends, that is when the parent is gone,
        # however it went.
        alive_read, alive_write = os.pipe()
        self._alive_fds.append(alive_write)
        listening = {name: sock.fileno() for name, sock in sockets.items()}
        links = {str(peer): sock.fileno() for peer, sock in peers.items()}
        plan = {
            "index": worker,
            "size": size,
            "sockets": listening,
            "peers": links,
            "parent": alive_read,
        }
        fds = [*listening.values(), *links.values(), alive_read]
        try:
            # Only file descriptors go on the command line (visible to every local user);
            # the settings come from the same file and environment as the parent's.
            command = [*self._worker_command, "--plan", json.dumps(plan)]
            return subprocess.Popen(command, pass_fds=fds)  # noqa: S603 - our own program
        finally:
            os.close(alive_read)

    async def _wait_for_workers(self) -> None:
        assert self.sip is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WORKER_START_S
        while True:
            with contextlib.suppress(TimeoutError):
                await self.sip.wait_for_workers(WORKER_POLL_S)
                return
            for process in self._workers:
                if process.poll() is not None:
                    raise WorkerError(f"a SIP worker exited while starting ({process.returncode})")
            if loop.time() > deadline:
                raise WorkerError(f"the SIP workers did not start within {WORKER_START_S:g} s")

    async def _watch_workers(self) -> None:
        """A worker that dies takes 1/n of the calls with it: stop the node, loudly."""
        while True:
            await asyncio.sleep(WORKER_WATCH_S)
            for process in self._workers:
                if process.poll() is not None:
                    logger.error(
                        "SIP worker (pid %d) exited with %s; stopping the node",
                        process.pid,
                        process.returncode,
                    )
                    os.kill(os.getpid(), signal.SIGTERM)
                    return

    async def stop_workers(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await asyncio.to_thread(_reap, list(self._workers), WORKER_STOP_S)
        self._workers.clear()
        for fd in self._alive_fds:
            os.close(fd)
        self._alive_fds.clear()

    async def serve_worker(self, plan: WorkerPlan, parent: int) -> None:
        """Run as SIP worker `plan.index` until the parent is gone or SIGTERM comes."""
        assert self.sip is not None
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_reader(parent, stop.set)  # readable = EOF: the parent closed or died
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await self.sip.start(plan)
            self.sip.announce_ready()
            tune_gc()
            purging = loop.create_task(self._purge_loop())
            await stop.wait()
            purging.cancel()
        finally:
            loop.remove_reader(parent)
            await self.sip.aclose()

    async def _purge_loop(self) -> None:
        assert self.sip is not None
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
            await self.sip.location.purge(asyncio.get_running_loop().time())

    async def serve(self) -> None:
        tune_gc()
        chores = asyncio.create_task(self._housekeeping_loop(), name="housekeeping")
        try:
            await self._serve_http()
        finally:
            await self.stop_workers()
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
            ssl_certfile=self.settings.http.tls_cert_file,
            ssl_keyfile=self.settings.http.tls_key_file,
        )
        await uvicorn.Server(config).serve()

    async def aclose(self) -> None:
        await self.stop_workers()
        await self.blobs.aclose()
        if self.sms is not None:
            await self.sms.aclose()
        await self.engine.dispose()
        await self.key_engine.dispose()


#: What the stored data of an account is, by the inventory (erased with it, confirmed to it).
ACCOUNT_CATEGORIES = (
    *provisioning_inventory.ERASED_WITH_ACCOUNT,
    pushgw_inventory.PUSH_INSTANCES,
    pushgw_inventory.PUSH_TRACES,
    messaging_inventory.HELD_MESSAGES,
    messaging_inventory.MESSAGE_HISTORY,
    files_inventory.ATTACHMENTS,
    auth_inventory.SESSIONS,
    crypto_inventory.SUBJECT_KEYS,
)


def data_inventory() -> Inventory:
    """What every component of ringfence keeps of personal data (`ringfence.inventory`)."""
    return Inventory.of(
        provisioning_inventory.DECLARED,
        pushgw_inventory.DECLARED,
        messaging_inventory.DECLARED,
        files_inventory.DECLARED,
        auth_inventory.DECLARED,
        crypto_inventory.DECLARED,
        state_inventory.DECLARED,
        proxy_inventory.DECLARED,
        transport_inventory.DECLARED,
        disclosures.DECLARED,
        erasure.DECLARED,
        requests.DECLARED,
        verification.DECLARED,
        postmortem.DECLARED,
        policy.DECLARED,
    )


def _reap(processes: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    """SIGTERM each process, wait up to `timeout_s` for each, then SIGKILL it."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _NodeSender:
    """Messages the API sends on a user's behalf go through this process's SIP node."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def send_message(
        self,
        sender: Outgoing,
        to: str,
        content_type: str,
        body: bytes,
        disposition: str | None = None,
    ) -> Sent:
        sip = self._runtime.sip
        if sip is None or sip.node is None:
            return Sent(503, "SIP is not running on this node")
        return await sip.node.send_message(sender, to, content_type, body, disposition)


class _Generations:
    """Keeps the collector's young generations small while a node serves (see `tend`)."""

    def tend(self, rounds: int) -> None:
        """Once a second: freeze what outlived the last second; every FULL_GC_ROUNDS, all.

        A SIP node's long-lived containers are its live transactions and calls (seconds to
        a minute each) and its registrations; they die by reference counting, not by the
        cyclic collector. Left in the collector's generations they made each middle-
        generation collection walk ~50,000 of them (22-70 ms at 200 calls/s, the tail of
        `make bench-push`). Frozen each second, they stay out of every collection, and the
        young generations hold one second's allocations at most. What a frozen object
        leaves as cyclic garbage is reclaimed by the full collection every FULL_GC_ROUNDS
        seconds (one pause of a few hundred milliseconds at most, then everything is frozen
        again): "gc.freeze" as Instagram's servers use it, made periodic.
        """
        if rounds % FULL_GC_ROUNDS == 0:
            gc.unfreeze()
            gc.collect()
        gc.freeze()


GENERATIONS = _Generations()


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
