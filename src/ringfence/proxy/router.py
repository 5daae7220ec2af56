"""Routing decisions: who may send what where (RFC 3261 §16.5 targets, §22.3 proxy auth).

The router answers each `Incoming` request of the engine with a `Reply` or a `Forward`:

- In-dialog requests go where our Record-Route's flow token says, else to the Request-URI
  (a registered contact is reached over the flow it registered on).
- Requests from one of our tenants' users must prove it (407, RFC 3261 §22.3) unless they
  come from a trusted host (the trunk); the authenticated user must be the From user (403).
- A Request-URI in a tenant's domain goes to every registered contact of that user (parallel
  forking, §16.5); an unknown user gets 404, one with no registration 480.
- Anything else goes to the configured trunk when a local user asked for it, else 403; a
  stranger may only reach the tenants' users (no open relay).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from ringfence.provisioning.service import SipCredentials
from ringfence.proxy.engine import Incoming, Target, uri_destination
from ringfence.proxy.parking import (
    PushDevice,
    Registration,
    Sleeper,
    sleepers_of,
    sleepers_with,
)
from ringfence.sip.digest import (
    DigestAlgorithm,
    DigestError,
    DigestRealms,
    VerifyStatus,
)
from ringfence.sip.message import Request
from ringfence.sip.pn import is_push_contact
from ringfence.sip.transaction import Address
from ringfence.sip.uri import SipURI, URIError, is_ip_address, parse_name_addr, parse_uri
from ringfence.state.ratelimit import AuthFailureGuard

logger = logging.getLogger(__name__)

#: Requests that wake a sleeping device and wait for it (RFC 8599). A MESSAGE is not among
#: them: one for a user whose devices all sleep is held (`Hold`) and delivered later.
WAKING_METHODS = frozenset({"INVITE"})

#: Methods that start something on a user's behalf: the caller must authenticate.
AUTHENTICATED_METHODS = frozenset(
    {"INVITE", "MESSAGE", "SUBSCRIBE", "REFER", "PUBLISH", "OPTIONS", "INFO", "UPDATE", "NOTIFY"}
)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Parties:
    """Whose message histories keep a MESSAGE (`messaging.history`).

    An account id is None when that party is not a user of the service, or has messaging
    off (P1); with each, how many days its history keeps messages.
    """

    sender: str | None = None
    recipient: str | None = None
    sender_retention_days: int = 90
    recipient_retention_days: int = 90

    def __bool__(self) -> bool:
        return self.sender is not None or self.recipient is not None


@dataclass(frozen=True, slots=True)
class Forward:
    targets: tuple[Target, ...]
    record_route: bool = True
    #: The realm whose Proxy-Authorization credentials we consumed: they are removed
    #: before forwarding, so that no callee or trunk receives the caller's digest response
    #: (enough for an offline guess at the password; RFC 3261 §22.3 makes these
    #: credentials hop-by-hop).
    consumed_realm: str | None = None
    #: Devices to wake by push for this request (RFC 8599); it waits for them as well.
    wake: WakeUp | None = None
    #: For a MESSAGE: whose histories keep it.
    history: Parties | None = None


@dataclass(frozen=True, slots=True)
class WakeUp:
    """The sleeping devices of a callee: push each, park the request, fork when back."""

    aor: str
    sleepers: tuple[Sleeper, ...]
    #: The callee's account (its push trace).
    account_id: str | None = None
    #: Overlay mode: the call came from the PBX for this device; the PBX hears its
    #: progress (X-Sipis-Push-Status) and waits this long.
    overlay: OverlayTarget | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    """A MESSAGE for a user whose devices all sleep: keep it, tell them, deliver on REGISTER.

    Attributes:
        aor: The recipient's address-of-record.
        account_id: The recipient's account (its key seals the message).
        sleepers: The devices to tell by an alert push.
    """

    aor: str
    account_id: str
    sleepers: tuple[Sleeper, ...]
    history: Parties | None = None


Decision = Reply | Forward | Hold


class Contact(Registration, Protocol):
    """What the router needs of a registration (a `state.location.Binding`)."""

    @property
    def contact(self) -> str: ...

    @property
    def expires_at(self) -> float: ...

    @property
    def source(self) -> Address: ...

    @property
    def path(self) -> tuple[str, ...]: ...


class Locations(Protocol):
    async def lookup(self, aor: str, now: float) -> Sequence[Contact]: ...


class PushDevices(Protocol):
    """The push instances an account's devices reported over HTTPS (`ringfence.pushgw`)."""

    async def push_devices(self, account_id: str) -> Sequence[PushDevice]: ...


@dataclass(frozen=True, slots=True)
class OverlayTarget:
    """The device an upstream registration stands for (overlay mode, `ringfence.overlay`).

    Attributes:
        username: The device's account here (a user of `domain`).
        domain: The account's tenant domain.
        instance: The `+sip.instance` the app registers here with when it wakes.
        wait_s: How long a call from the PBX waits for it (then 480).
    """

    username: str
    domain: str
    instance: str
    wait_s: float


class Overlay(Protocol):
    """Recognises the Contacts ringfence registered on a PBX for sleeping devices."""

    async def overlay_target(self, user: str) -> OverlayTarget | None:
        """The device a Request-URI user part stands for; None: not one of ours."""
        ...


#: The user part of an upstream registration's Contact starts so (`overlay.contact`).
OVERLAY_PREFIX = "rfo-"
#: RFC 3994 typing indications: an overlay device that sleeps is not woken for them.
IS_COMPOSING = "application/im-iscomposing+xml"


class Accounts(Protocol):
    """What the router needs of provisioning (`ProvisioningService`)."""

    async def is_tenant_domain(self, domain: str) -> bool: ...

    async def sip_credentials(self, domain: str, username: str) -> SipCredentials | None: ...


@dataclass(frozen=True, slots=True)
class RouterConfig:
    nonce_secret: bytes
    nonce_lifetime_s: float = 300.0
    trunk: str | None = None
    trusted_hosts: frozenset[str] = frozenset()
    digest_algorithms: tuple[DigestAlgorithm, ...] = (DigestAlgorithm.SHA256, DigestAlgorithm.MD5)
    #: This worker process's number: the scope of the nonces it issues (`sip.digest`).
    nonce_scope: int = 0


def _always_open(_flow: str) -> bool:
    return True


def _media_type(request: Request) -> str:
    value = request.headers.get("Content-Type") or ""
    return value.split(";", 1)[0].strip().lower()


#: The reason phrase when DNS gives no next hop (RFC 3263 §4.3: the request fails).
NO_DNS = "Next hop not found in DNS"


class Router:
    def __init__(
        self,
        accounts: Accounts,
        locations: Locations,
        config: RouterConfig,
        *,
        flow_open: Callable[[str], bool] = _always_open,
        guard: AuthFailureGuard | None = None,
        resolve: Callable[[SipURI], Awaitable[list[Address]]] | None = None,
        devices: PushDevices | None = None,
        overlay: Overlay | None = None,
    ) -> None:
        self._overlay = overlay
        self._accounts = accounts
        self._devices = devices
        self._resolve = resolve
        self._guard = guard
        self._locations = locations
        self._config = config
        self._flow_open = flow_open
        self._trunk: SipURI | None = None
        if config.trunk:
            trunk = parse_uri(config.trunk)
            if not isinstance(trunk, SipURI):
                raise ValueError("the trunk must be a sip: or sips: URI")
            self._trunk = trunk
        self._realms = DigestRealms(
            config.nonce_secret,
            nonce_lifetime_s=config.nonce_lifetime_s,
            algorithms=config.digest_algorithms,
            scope=config.nonce_scope,
        )

    async def decide(self, incoming: Incoming, now: float) -> Decision:
        request = incoming.request
        if incoming.in_dialog:
            return await self._in_dialog(incoming, now)
        if incoming.hop is not None:
            # A preloaded Route beyond us (an outbound proxy use): follow it.
            return Forward((Target(request.uri, incoming.hop),), record_route=True)
        try:
            target = parse_uri(request.uri)
            caller = parse_name_addr(request.headers.get("From") or "").uri
        except URIError:
            return Reply(400, "Bad Request-URI or From")
        if (
            self._overlay is not None
            and isinstance(target, SipURI)
            and target.user is not None
            and target.user.startswith(OVERLAY_PREFIX)
        ):
            return await self._from_upstream(request, target.user, now)
        local_caller = False
        consumed: str | None = None
        if isinstance(caller, SipURI) and await self._accounts.is_tenant_domain(caller.host):
            local_caller = True
            if (
                request.method in AUTHENTICATED_METHODS
                and incoming.source.host not in self._config.trusted_hosts
            ):
                refusal = await self._authenticate(incoming, caller, now)
                if refusal is not None:
                    return refusal
                consumed = caller.host.lower()
        sender = Parties()
        if request.method == "MESSAGE" and consumed is not None and isinstance(caller, SipURI):
            sender = await self._sender_party(caller)
        if isinstance(target, SipURI) and await self._accounts.is_tenant_domain(target.host):
            decision = await self._to_user(
                target.user_unescaped, target.host.lower(), request.method, now
            )
            if isinstance(decision, (Forward, Hold)) and decision.history is not None:
                history = replace(
                    decision.history,
                    sender=sender.sender,
                    sender_retention_days=sender.sender_retention_days,
                )
                decision = replace(decision, history=history)
            if isinstance(decision, Forward):
                return replace(decision, consumed_realm=consumed)
            return decision
        if local_caller or incoming.source.host in self._config.trusted_hosts:
            if self._trunk is not None:
                branch = await self._target(request.uri, self._trunk)
                if branch is None:
                    return Reply(503, NO_DNS)
                return Forward((branch,), consumed_realm=consumed, history=sender or None)
            return Reply(403, "No route to destinations outside this service")
        return Reply(404, "Domain not served here")

    async def route_message(self, target: SipURI, now: float) -> Decision:
        """Where a MESSAGE the service sends to one of its users goes.

        No caller to authenticate here: the API did.
        """
        if not await self._accounts.is_tenant_domain(target.host):
            return Reply(404, "Not a user of this service")
        return await self._to_user(target.user_unescaped, target.host.lower(), "MESSAGE", now)

    async def _from_upstream(self, request: Request, user: str, now: float) -> Decision:
        """A request from the PBX to the Contact of a device's upstream registration.

        It goes to that device alone: straight to it when it is registered here (awake),
        else it is woken by push, and the request waits (a call) or is held (a message).
        No authentication: the Contact itself, MAC and all, is known to the PBX only.
        """
        assert self._overlay is not None
        found = await self._overlay.overlay_target(user)
        if found is None:
            return Reply(404, "Not Found")
        return await self._to_user(
            found.username, found.domain, request.method, now, overlay=found, request=request
        )

    async def _sender_party(self, caller: SipURI) -> Parties:
        """The authenticated sender of a MESSAGE, as a party whose history keeps it."""
        account = await self._accounts.sip_credentials(
            caller.host.lower(), caller.user_unescaped or ""
        )
        if account is None or not account.messaging:
            return Parties()
        return Parties(
            sender=account.account_id, sender_retention_days=account.message_retention_days
        )

    async def _to_user(
        self,
        user: str | None,
        domain: str,
        method: str,
        now: float,
        *,
        overlay: OverlayTarget | None = None,
        request: Request | None = None,
    ) -> Decision:
        if not user:
            return Reply(404, "Not Found")
        credentials = await self._accounts.sip_credentials(domain, user)
        if credentials is None:
            return Reply(404, "Not Found")
        aor = f"sip:{user}@{domain}"
        every = await self._locations.lookup(aor, now)
        if overlay is not None:
            # The PBX reached this device's registration: its other devices have their own.
            every = [b for b in every if b.instance == overlay.instance]
        bindings = every
        sleepers: list[Sleeper] = []
        if method in WAKING_METHODS or method == "MESSAGE":
            # RFC 8599: a device that registered with push parameters may sleep; a request
            # for it is announced by a push, and waits for the device's REGISTER.
            sleeping = [b for b in bindings if is_push_contact(b.contact)]
            sleepers = sleepers_of(sleeping)
            if sleepers:
                bindings = [b for b in bindings if b not in sleeping]
            if credentials.push and self._devices is not None:
                # Devices that reported their tokens over HTTPS instead (P4: only with push
                # as the account's background mode).
                devices = await self._devices.push_devices(credentials.account_id)
                if overlay is not None:
                    devices = [d for d in devices if d.instance == overlay.instance]
                awake = [b for b in bindings if b.expires_at > now]
                sleepers = sleepers_with(sleepers, devices, every, awake)
        # A sleeping push binding is kept past its registration: only registered ones count.
        direct = [b for b in bindings if b.expires_at > now]
        history: Parties | None = None
        if method == "MESSAGE":
            history = Parties(
                recipient=credentials.account_id if credentials.messaging else None,
                recipient_retention_days=credentials.message_retention_days,
            )
        if (
            overlay is not None
            and method == "MESSAGE"
            and not direct
            and request is not None
            and _media_type(request) == IS_COMPOSING
        ):
            # RFC 3994 §3: typing indications are advisory; a sleeping device is not woken
            # for one (Acrobits' SIPIS drops them too). Taken, so the PBX does not retry.
            return Reply(200, "OK")
        if method == "MESSAGE" and not direct and sleepers and credentials.messaging:
            # Every device sleeps: the message waits for one of them (RFC 3428 §7), which an
            # alert push tells. Waiting here would outlast the sender's transaction (64*T1).
            return Hold(aor, credentials.account_id, tuple(sleepers), history)
        wake = (
            WakeUp(aor, tuple(sleepers), credentials.account_id, overlay)
            if sleepers and method in WAKING_METHODS
            else None
        )
        if not direct and wake is None:
            return Reply(480, "Temporarily Unavailable")
        # §16.5/§16.6: each contact is a branch; it is reached over the flow it registered
        # from (RFC 5626; RFC 3581 for NATed UDP), with its Path as Route (RFC 3327).
        targets = tuple(self.target_of(b) for b in direct)
        return Forward(targets, wake=wake, history=history)

    async def stateless_hop(self, uri: SipURI) -> Address | None:
        """Where a stateless request (an ACK for a 2xx, §16.11) to the host `uri` names goes.

        None for a domain served here: such an ACK matched no transaction, so it is the
        late ACK of a non-2xx whose transaction is over (§17.2.1 absorbs the others), and
        nobody downstream waits for it. None too when DNS gives no hop (RFC 3263 §4.3).
        """
        if await self._accounts.is_tenant_domain(uri.host):
            return None
        target = await self._target(str(uri), uri)
        return None if target is None else target.destination

    def target_of(self, binding: Contact) -> Target:
        """The branch to a registration."""
        return Target(binding.contact, self._next_hop(binding), binding.path)

    def _next_hop(self, binding: Contact) -> Address:
        """The registration's flow while it is open, else a new connection to its Contact.

        Plain TCP/TLS registrations outlive their connection (RFC 3261 §18.2.2).
        """
        source = binding.source
        if source.flow is None or self._flow_open(source.flow):
            return source
        try:
            uri = parse_uri(binding.contact)
        except URIError:
            return source
        return uri_destination(uri) if isinstance(uri, SipURI) else source

    async def _in_dialog(self, incoming: Incoming, now: float) -> Decision:
        request = incoming.request
        if incoming.hop is not None:
            return Forward((Target(request.uri, incoming.hop),), record_route=False)
        try:
            uri = parse_uri(request.uri)
        except URIError:
            return Reply(400, "Bad Request-URI")
        if not isinstance(uri, SipURI):
            return Reply(416, "Unsupported URI Scheme")
        target = await self._target(request.uri, uri)
        if target is None:
            return Reply(503, NO_DNS)
        return Forward((target,), record_route=False)

    async def _target(self, request_uri: str, next_hop: SipURI) -> Target | None:
        """A branch to `request_uri` through the hop `next_hop` names; None without one.

        The hop is the URI's address, or RFC 3263 over DNS for a host name, the further DNS
        targets kept to fail over to (§4.3).
        """
        if self._resolve is None or is_ip_address(next_hop.host):
            return Target(request_uri, uri_destination(next_hop))
        hops = await self._resolve(next_hop)
        if not hops:
            return None
        return Target(request_uri, hops[0], alternates=tuple(hops[1:]))

    async def _authenticate(self, incoming: Incoming, caller: SipURI, now: float) -> Reply | None:
        realm = caller.host.lower()
        request = incoming.request
        try:
            credentials = self._realms.credentials_for(
                request.headers.get_all("Proxy-Authorization"), realm
            )
        except DigestError:
            return Reply(400, "Malformed Proxy-Authorization")
        stale = False
        source = incoming.source.host
        if self._guard is not None and self._guard.blocked(
            source, caller.user_unescaped or "", now
        ):
            return Reply(403, AuthFailureGuard.REASON)
        if credentials is not None:
            if credentials.username != caller.user_unescaped:
                return Reply(403, "Credentials do not match the From user")
            account = await self._accounts.sip_credentials(realm, credentials.username)
            if account is None:
                self._failed(source, None, now)
            else:
                server = self._realms.server(realm)
                result = server.verify(credentials, request.method, account.ha1, now)
                if result.status is VerifyStatus.OK:
                    if self._guard is not None:
                        self._guard.succeeded(source, credentials.username)
                    return None if account.active else Reply(403, "Account suspended")
                if result.status is VerifyStatus.WRONG_RESPONSE:
                    self._failed(source, credentials.username, now)
                stale = result.status is VerifyStatus.STALE
        challenges = self._realms.challenge_headers(realm, "Proxy-Authenticate", now, stale=stale)
        return Reply(407, "Proxy Authentication Required", challenges)

    def _failed(self, source: str, user: str | None, now: float) -> None:
        if self._guard is not None:
            self._guard.failed(source, user, now)
