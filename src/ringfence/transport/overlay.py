"""Overlay mode at the edge: devices' accounts kept registered on their tenant's PBX.

The app of a tenant with an upstream PBX hands its SIP account in its push instance
(`PUT /v1/push/instances/{selector}` with `sip_account`, over HTTPS: P2). From then until the
instance ends, this keeps that account registered on the PBX with a Contact of ringfence's
(`overlay.contact`), so that the PBX sends the device's calls and messages here, where the
router wakes the device by push and relays them once it registers (`proxy.router`,
`Router._from_upstream`).

- The REGISTERs themselves, their timing and the rate ceiling are sans-IO
  (`overlay.registration`, `overlay.upkeep`); this sends them through the SIP node and
  hands back the responses.
- A restart restores every registration over `[overlay] restore_window_s`; `[overlay]
  max_register_rate` caps what the PBXes see at all times.
- An instance reported again replaces its registration; one erased (DELETE, expiry, push
  switched off, the account erased: P3) is unregistered, and its credentials leave memory.
- A registration the PBX refused for 12 hours is given up: the instance is erased and the
  app told by an alert push (it must hand its account again).
- About 24 hours before an instance expires the app gets a silent push (it reports again
  if it runs), about 12 hours before a visible one, and when it ends a final one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from ringfence.clock import Clock
from ringfence.config import OverlaySettings
from ringfence.overlay.contact import ContactTokens
from ringfence.overlay.registration import State, UpstreamAccount, UpstreamRegistration
from ringfence.overlay.upkeep import Upkeep, cseq_number
from ringfence.provisioning.models import Tenant, UpstreamPbx, UpstreamTransport
from ringfence.proxy.engine import Target
from ringfence.proxy.parking import Sleeper
from ringfence.proxy.router import OverlayTarget
from ringfence.push.provider import PushKind
from ringfence.pushgw.instances import PushInstance, PushInstances
from ringfence.sip.message import Request, Response
from ringfence.sip.transaction import Address
from ringfence.sip.uri import SipURI, parse_uri

logger = logging.getLogger(__name__)

#: Instances read per query when a restart restores them.
RESTORE_PAGE = 500
#: How long a PBX's addresses (RFC 3263) are used before they are looked up again.
DNS_TTL_S = 300.0
#: The notices before an instance expires: (how long before, push kind, reason).
EXPIRY_NOTICES: tuple[tuple[timedelta, PushKind, str], ...] = (
    (timedelta(hours=24), PushKind.WAKE, "instance_expiring_soon"),
    (timedelta(hours=12), PushKind.INSTANCE_EXPIRING, "instance_expiring"),
)
#: How often the kept instances are checked against the store and their tenant's PBX.
SYNC_S = 10.0
#: How often the instances are looked at for their expiry notices.
NOTICE_CHECK = timedelta(minutes=1)
#: How long a notice may wait at the push provider for an offline device.
NOTICE_TTL_S = 6 * 3600
#: When restoring at start failed (the database away), how soon it is tried again.
RESTORE_RETRY_S = 30.0


class Accounts(Protocol):
    """What the overlay needs of provisioning (`ProvisioningService`)."""

    async def sip_identity(
        self, account_id: str, *, stale_ok: bool = False
    ) -> tuple[str, Tenant] | None:
        """The account's user name and tenant (None: it is gone).

        `stale_ok`: a cached one past its TTL will do (the restore: the sync corrects it).
        """
        ...

    async def tenants(self) -> list[Tenant]:
        """Every tenant, as stored now."""
        ...


class Notifier(Protocol):
    """Sends instance notices (`push.waker.PushWaker.notice`)."""

    def notice(
        self, aor: str, sleeper: Sleeper, kind: PushKind, ttl_s: int, reason: str
    ) -> None: ...


SendRequest = Callable[[Request, Target], Awaitable[tuple[int, Response | None]]]
Resolve = Callable[[SipURI], Awaitable[list[Address]]]
MakeContact = Callable[[str, UpstreamTransport], str]


@dataclass(slots=True)
class _Kept:
    """One instance whose account is kept registered."""

    instance: PushInstance
    target: OverlayTarget
    tenant_id: str
    upstream: UpstreamPbx
    #: The expiry notices sent so far (indexes into EXPIRY_NOTICES).
    noticed: int = 0


class OverlayService:
    """Keeps the upstream registrations of every overlay instance (module docstring)."""

    def __init__(
        self,
        instances: PushInstances,
        accounts: Accounts,
        tokens: ContactTokens,
        send: SendRequest,
        resolve: Resolve,
        contact: MakeContact,
        clock: Clock,
        settings: OverlaySettings,
        *,
        notifier: Notifier | None = None,
    ) -> None:
        self._instances = instances
        self._accounts = accounts
        self._tokens = tokens
        self._send = send
        self._resolve = resolve
        self._contact = contact
        self._clock = clock
        self._settings = settings
        self._notifier = notifier
        # One for all: a Random of each registration's own would hold 2.5 KB of state.
        self._rng = random.SystemRandom()
        self.upkeep: Upkeep[str] = Upkeep(
            settings.max_register_rate, settings.restore_window_s, self._rng
        )
        self._kept: dict[str, _Kept] = {}
        self._hops: dict[tuple[str, int | None, str], tuple[float, list[Address]]] = {}
        self._notices_at: datetime | None = None
        self._sync_at = 0.0
        #: Instances moving to another PBX, registered there once the unregister from the
        #: old one is over (the same registrar under another name would otherwise take
        #: the new binding and then the old Call-ID's Expires: 0 for it).
        #: (the report, the account's user name, its tenant, whether to spread its start).
        self._moves: dict[str, tuple[PushInstance, str, Tenant, bool]] = {}
        # Reports and erasures that came while something awaited the store (`_watch`):
        # what was read before them is out of date. Kept only while an await is going on.
        self._epoch = 0
        self._touched: dict[str, int] = {}
        self._awaits = 0
        #: Instances given up on, still to erase from the store (retried until done).
        self._to_erase: set[str] = set()
        #: Stopping: nothing more is registered.
        self._closing = False
        #: When restoring is to be tried again (it failed); None: done or going on.
        self._restore_at: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: When each REGISTER was sent (monotonic), if set to a list: the bench reads it.
        self.sent_log: list[float] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> int:
        """Restore the registrations of every live overlay instance; returns how many.

        The loop runs whatever happens: a restore that fails is tried again from it.
        """
        try:
            return await self._restore()
        finally:
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._run(), name="overlay")

    async def _restore(self) -> int:
        self._restore_at = None
        restored = 0
        after: str | None = None
        try:
            while True:
                with self._watch() as epoch:
                    page = await self._instances.page(after, RESTORE_PAGE)
                    if not page:
                        return restored
                    after = page[-1].id
                    for instance in page:
                        if (
                            instance.id in self._kept
                            or instance.id in self._moves
                            or instance.id in self._to_erase
                            or self._touched_since(instance.id, epoch)
                        ):
                            continue  # reported or erased since the page was read: newer
                        if await self._keep(instance, spread=True, since=epoch):
                            restored += 1
        except Exception:
            self._restore_at = self._now() + RESTORE_RETRY_S
            raise

    async def aclose(self, *, unregister: bool = False) -> None:
        """Stop. `unregister`: remove every binding on the PBXes first (a node leaving)."""
        self._closing = True  # nothing is registered any more
        self._moves.clear()
        if unregister:
            for key in list(self._kept):
                self._forget(key)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5.0
            # A REGISTER out when forgotten may take until Timer F to answer: unregisters
            # waiting for one go now.
            self.upkeep.send_waiting(self._now())
            while self.upkeep.leaving_any() and loop.time() < deadline:
                self._wake.set()
                await asyncio.sleep(0.05)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _now(self) -> float:
        return self._clock.monotonic()

    def wake(self) -> None:
        """Look at the registrations now (the clock moved: tests, or a chore is due)."""
        self._wake.set()

    @contextlib.contextmanager
    def _watch(self) -> Iterator[int]:
        """Around reading the store: yields the epoch before, for `_touched_since`."""
        self._awaits += 1
        try:
            yield self._epoch
        finally:
            self._awaits -= 1
            if not self._awaits:
                self._touched.clear()

    def _touch(self, instance_id: str) -> None:
        """An instance was reported or erased: what any await read of it is out of date."""
        self._epoch += 1
        if self._awaits:
            self._touched[instance_id] = self._epoch

    def _touched_since(self, instance_id: str, epoch: int) -> bool:
        return self._touched.get(instance_id, 0) > epoch

    # -- instances ----------------------------------------------------------------------------

    async def instance_reported(self, instance: PushInstance) -> None:
        """`pushgw.InstanceListener`: a report (new or renewed) replaces the registration."""
        self._touch(instance.id)
        self._to_erase.discard(instance.id)  # reported again after it was given up: kept
        self._moves.pop(instance.id, None)  # kept from this report on
        kept = self._kept.get(instance.id)
        report = instance.report
        if kept is not None and (
            kept.instance.report.sip_account,
            kept.instance.report.sip_instance,
        ) == (
            report.sip_account,
            report.sip_instance,
        ):
            # The same account again (new push tokens at most): renewed; the registration
            # in force goes on.
            kept.instance = instance
            kept.noticed = 0
            return
        old = kept.instance.report.sip_account if kept is not None else None
        if kept is not None and (
            report.sip_account is None or old is None or old.aor != report.sip_account.aor
        ):
            # Another address-of-record: the old one's binding goes. The same one with new
            # credentials is replaced by the new registration (same Contact, RFC 3261
            # §10.3 step 7), with no unregister that could overtake it.
            self._forget(instance.id)
        await self._keep(instance, spread=False)
        self._wake.set()

    async def instances_erased(self, ids: Sequence[str]) -> None:
        """`pushgw.InstanceListener`: unregister, and drop the credentials from memory."""
        for instance_id in ids:
            self._forget(instance_id)
        self._wake.set()

    async def _keep(
        self, instance: PushInstance, *, spread: bool, since: int | None = None
    ) -> bool:
        """Keep the instance's account registered (False: it has none, or it is gone).

        `since`: the epoch when `instance` was read (a restore page), if before now.
        """
        if instance.report.sip_account is None or instance.report.sip_instance is None:
            return False
        with self._watch() as epoch:
            # A restore takes what the warm-up cached, however old: thousands of round
            # trips otherwise, and the sync follows a tenant's changes within seconds.
            identity = await self._accounts.sip_identity(
                instance.account_id, stale_ok=since is not None
            )
            if self._touched_since(instance.id, epoch if since is None else since):
                return False  # reported again or erased while we looked: that one counts
        if identity is None:  # erased meanwhile
            logger.info("overlay: the account of an instance is gone")
            return False
        return self._register(instance, identity[0], identity[1], spread=spread)

    def _register(
        self, instance: PushInstance, username: str, tenant: Tenant, *, spread: bool
    ) -> bool:
        account = instance.report.sip_account
        sip_instance = instance.report.sip_instance
        upstream = tenant.upstream
        if self._closing or account is None or sip_instance is None or upstream is None:
            return False  # leaving; no account; or the tenant is standalone (again)
        if self.upkeep.leaving_key(instance.id):
            # Its unregister is still going on: registered once it is over, so that the
            # two cannot overtake each other (the same Contact: the Expires: 0 of the old
            # Call-ID would remove the new binding, RFC 3261 §10.3 step 7).
            self._moves[instance.id] = (instance, username, tenant, spread)
            return True
        user = self._tokens.user_of(instance.id)
        registration = UpstreamRegistration(
            UpstreamAccount(
                aor=account.aor,
                registrar=f"sip:{account.domain}",
                contact=self._contact(user, upstream.transport),
                auth_username=account.auth_username or account.username,
                password=account.password,
                ha1=account.ha1,
                expires=upstream.expires_s,
            ),
            self._rng,
        )
        target = OverlayTarget(
            username, tenant.sip_domain, sip_instance, self._settings.call_wait_s
        )
        self._kept[instance.id] = _Kept(instance, target, tenant.id, upstream)
        self.upkeep.add(instance.id, registration, self._now(), spread=spread)
        return True

    def _forget(self, instance_id: str, *, touch: bool = True) -> None:
        """Unregister an instance's account and drop it from memory.

        `touch`: a report or an erasure is why (a `_keep` still reading gives way to it);
        not so when the instance moves to another PBX (the report is the same).
        """
        if touch:
            self._touch(instance_id)
            self._moves.pop(instance_id, None)
        kept = self._kept.pop(instance_id, None)
        if kept is not None:
            self.upkeep.remove(instance_id, self._now(), where=kept.upstream)

    # -- the router's side --------------------------------------------------------------------

    async def overlay_target(self, user: str) -> OverlayTarget | None:
        """`proxy.router.Overlay`: the device a Request-URI user part stands for."""
        instance_id = self._tokens.instance_of(user)
        if instance_id is None:
            return None
        kept = self._kept.get(instance_id)
        return kept.target if kept is not None else None

    def stats(self) -> dict[str, int]:
        counts = self.upkeep.states()
        return {
            "instances": len(self._kept),
            "registered": counts.get(State.REGISTERED, 0),
            "registering": counts.get(State.REGISTERING, 0),
            "backing_off": counts.get(State.BACKING_OFF, 0),
            "sent": self.upkeep.sent,
        }

    # -- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        next_check = 0.0
        while True:
            try:
                next_check = await self._round(next_check)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A database hiccup in a chore must not stop every registration.
                logger.exception("overlay: a round failed; going on")
                await asyncio.sleep(1.0)

    async def _round(self, next_check: float) -> float:
        """One round of the loop; returns when the chores are due next."""
        now = self._now()
        for key, request in self.upkeep.ready(now):
            # Where it goes is decided now: a chore may forget the instance before the
            # exchange starts (its unregister then follows to the same PBX).
            where = self.upkeep.destination(request.headers.get("Call-ID") or "")
            kept = self._kept.get(key)
            if isinstance(where, UpstreamPbx):
                upstream: UpstreamPbx | None = where  # an unregister
            else:
                upstream = kept.upstream if kept is not None else None
            self._spawn(self._exchange(key, request, upstream))
        if now >= next_check:
            next_check = now + 1.0
            await self._chores()
        wake_at = self.upkeep.wake_at(self._now())
        timeout = 1.0 if wake_at is None else min(1.0, max(0.0, wake_at - self._now()))
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        return next_check

    async def _chores(self) -> None:
        """Once a second: refusals and registrations given up; each minute: instance ends."""
        for instance_id in self.upkeep.refused():
            kept = self._kept.get(instance_id)
            if kept is not None:
                logger.info("overlay: the PBX refused a registration's credentials")
                self._notify(kept, PushKind.INSTANCE_REFUSED, "upstream_credentials_refused")
        for instance_id in self.upkeep.ended():
            kept = self._kept.get(instance_id)
            if kept is None:
                continue
            logger.info("overlay: the PBX refused a registration for 12 hours; instance ended")
            self._notify(kept, PushKind.INSTANCE_ENDED, "upstream_refused")
            self._forget(instance_id)  # a last REGISTER unanswered may have made a binding
            self._to_erase.add(instance_id)
        for instance_id in list(self._to_erase):
            if instance_id not in self._to_erase:
                continue  # reported again while another was erased: kept
            # Each on its own: one the store fails to erase is tried again next second,
            # and does not hold back the others (P3).
            try:
                await self._instances.erase(instance_id)
            except Exception:
                logger.exception("overlay: erasing an instance given up on failed; retrying")
            else:
                self._to_erase.discard(instance_id)
        if self._restore_at is not None and self._now() >= self._restore_at:
            self._restore_at = None
            self._spawn(self._restore_again())  # beside the loop: REGISTERs go on meanwhile
        for instance_id, (instance, username, tenant, spread) in list(self._moves.items()):
            if not self.upkeep.leaving_key(instance_id):
                del self._moves[instance_id]
                self._register(instance, username, tenant, spread=spread)
        if self._now() >= self._sync_at:
            self._sync_at = self._now() + SYNC_S
            await self._sync()
        now = self._clock.now()
        if self._notices_at is not None and now < self._notices_at:
            return
        # The notices are hours apart: a look each minute is enough, and a walk over
        # every instance each second would hold the event loop for milliseconds.
        self._notices_at = now + NOTICE_CHECK
        for n, kept in enumerate(list(self._kept.values())):
            await self._expiry_notices(kept, now)
            if n % 1000 == 999:
                await asyncio.sleep(0)

    async def _restore_again(self) -> None:
        restored = await self._restore()
        logger.info("overlay: %d upstream registrations restored on retry", restored)

    async def _sync(self) -> None:
        """Catch up with what this process was not told of.

        Instances erased by another process (a SIP worker pruning a dead token, the CLI)
        are forgotten and unregistered (P3); a tenant whose PBX changed has its
        registrations moved there, or dropped when it became standalone.
        """
        ids = [*self._kept, *self._moves]
        for start in range(0, len(ids), RESTORE_PAGE):
            chunk = ids[start : start + RESTORE_PAGE]
            with self._watch() as epoch:
                live = await self._instances.live_ids(chunk)
                for instance_id in chunk:
                    # One reported while we read is stored anew: not to forget.
                    if instance_id not in live and not self._touched_since(instance_id, epoch):
                        self._forget(instance_id)
        # The tenants, read once (not each instance's: that would hold the loop for a
        # round trip per instance).
        tenants = {tenant.id: tenant for tenant in await self._accounts.tenants()}
        for instance_id, kept in list(self._kept.items()):
            tenant = tenants.get(kept.tenant_id)
            upstream = tenant.upstream if tenant is not None else None
            if upstream == kept.upstream:
                continue
            if (
                tenant is not None
                and upstream is not None
                and instance_id in self.upkeep
                and (upstream.host, upstream.port, upstream.transport)
                == (kept.upstream.host, kept.upstream.port, kept.upstream.transport)
            ):
                # The same PBX, reached through another proxy or asked another interval:
                # the registration goes on under its Call-ID (an unregister and a new
                # registration of the same Contact could overtake each other).
                kept.upstream = upstream
                self.upkeep.set_expires(instance_id, upstream.expires_s)
                continue
            self._forget(instance_id, touch=False)
            if tenant is not None:
                # Registered there once the unregister from the old PBX is over.
                self._register(kept.instance, kept.target.username, tenant, spread=True)

    async def _expiry_notices(self, kept: _Kept, now: datetime) -> None:
        left = kept.instance.expires_at - now
        if left <= timedelta(0):
            # Past its age (P3): the final notice, then erased at once (the sweeper would).
            self._notify(kept, PushKind.INSTANCE_ENDED, "instance_expired")
            instance_id = kept.instance.id
            self._forget(instance_id)
            await self._instances.erase(instance_id)
            return
        while kept.noticed < len(EXPIRY_NOTICES):
            before, kind, reason = EXPIRY_NOTICES[kept.noticed]
            if left > before:
                return
            kept.noticed += 1
            # Both at once after a long stop: the visible one alone is enough.
            if kept.noticed < len(EXPIRY_NOTICES) and left <= EXPIRY_NOTICES[kept.noticed][0]:
                continue
            self._notify(kept, kind, reason)

    def _notify(self, kept: _Kept, kind: PushKind, reason: str) -> None:
        if self._notifier is None:
            return
        report = kept.instance.report
        sleeper = Sleeper(
            report.sip_instance,
            report.parameters(),
            ("", 0),
            registered_at=kept.instance.updated_at.timestamp(),
        )
        aor = f"sip:{kept.target.username}@{kept.target.domain}"
        self._notifier.notice(aor, sleeper, kind, NOTICE_TTL_S, reason)

    def _spawn(self, job: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await job
            except Exception:
                logger.exception("overlay: an upstream REGISTER failed")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _exchange(self, key: str, request: Request, upstream: UpstreamPbx | None) -> None:
        """Send one REGISTER and hand its outcome back to the upkeep."""
        call_id = request.headers.get("Call-ID") or ""
        response: Response | None = None
        try:
            if self.sent_log is not None:
                self.sent_log.append(self._now())
            hops = await self._hops_of(upstream) if upstream is not None else []
            if hops:
                target = Target(request.uri, hops[0], alternates=tuple(hops[1:]))
                _, response = await self._send(request, target)
        except Exception:
            logger.exception("overlay: sending an upstream REGISTER failed")
        finally:
            # Whatever happened, the registration is told: never left waiting for good.
            now = self._now()
            if response is None:
                self.upkeep.timed_out(key, now, call_id, cseq_number(request))
            else:
                self.upkeep.on_response(key, response, now, request)
            self._wake.set()

    async def _hops_of(self, upstream: UpstreamPbx) -> list[Address]:
        """Where requests to the PBX go: its outbound proxy, else itself (RFC 3263)."""
        cache_key = (upstream.outbound_proxy or upstream.host, upstream.port, upstream.transport)
        cached = self._hops.get(cache_key)
        now = self._now()
        if cached is not None and cached[0] > now:
            return cached[1]
        if upstream.outbound_proxy is not None:
            text = f"sip:{upstream.outbound_proxy};transport={upstream.transport.value}"
        else:
            port = f":{upstream.port}" if upstream.port is not None else ""
            text = f"sip:{upstream.host}{port};transport={upstream.transport.value}"
        uri = parse_uri(text)
        assert isinstance(uri, SipURI)
        hops = await self._resolve(uri)
        if not hops:
            logger.warning("overlay: the PBX's address could not be resolved")
        else:
            self._hops[cache_key] = (now + DNS_TTL_S, hops)
        return hops


class InstanceDirectory:
    """`proxy.router.Overlay` for the SIP workers that keep no registrations.

    All but the first: a Contact is checked by its MAC, its instance read from the store.
    """

    def __init__(
        self,
        instances: PushInstances,
        accounts: Accounts,
        tokens: ContactTokens,
        settings: OverlaySettings,
        clock: Clock,
    ) -> None:
        self._instances = instances
        self._accounts = accounts
        self._tokens = tokens
        self._settings = settings
        self._clock = clock
        self._cache: dict[str, tuple[float, OverlayTarget | None]] = {}

    async def overlay_target(self, user: str) -> OverlayTarget | None:
        instance_id = self._tokens.instance_of(user)
        if instance_id is None:
            return None
        now = self._clock.monotonic()
        cached = self._cache.get(instance_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        found: OverlayTarget | None = None
        instance = await self._instances.by_id(instance_id)
        if instance is not None and instance.report.sip_instance is not None:
            identity = await self._accounts.sip_identity(instance.account_id)
            if identity is not None and identity[1].upstream is not None:
                found = OverlayTarget(
                    identity[0],
                    identity[1].sip_domain,
                    instance.report.sip_instance,
                    self._settings.call_wait_s,
                )
        if len(self._cache) > 10_000:
            self._cache.clear()
        # Briefly: an erased instance's calls stop being relayed within the minute.
        self._cache[instance_id] = (now + 30.0, found)
        return found
