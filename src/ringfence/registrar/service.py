"""The registrar service: RFC 3261 §10.3 steps 2-8 over the accounts and the location service.

`Registrar.handle` takes a REGISTER whose Request-URI names a domain we serve (step 1 is the
transport driver's) and returns the response:

1. The AOR comes from To (`rules.address_of_record`: 400 for a non-SIP To, RFC 4475 §3.3.4).
   Its domain must be a tenant's SIP domain (else 403) and its user an account there (else
   404, step 5).
2. Digest authentication (step 3, RFC 3261 §22.4) against the account's HA1 values, in the
   realm of the tenant's SIP domain. No usable credentials (none, another scheme as in RFC
   4475 §3.3.7, another realm) get a 401 with a SHA-256 and an MD5 challenge (RFC 8760
   §2.3); a refused check is answered as `_REFUSALS` says.
3. Authorisation (step 4): the digest username must be the To user (no third-party
   registration) and the account active, else 403.
4. `rules.process_register` decides (steps 6-8) and the new bindings replace the old ones as
   a whole; a location store failure is a 500 (step 7).

Personal data: the service logs status codes and digest outcomes only, never a user name,
AOR, Contact or address.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import datetime
from email.utils import format_datetime
from typing import Literal, Protocol

from ringfence.clock import Clock, SystemClock
from ringfence.provisioning.service import NOT_LOADED, NotLoaded, SipCredentials
from ringfence.registrar.rules import (
    DEFAULT_POLICY,
    AddressOfRecord,
    RegistrarError,
    RegistrarPolicy,
    address_of_record,
    process_register,
    sip_uri_equal,
)
from ringfence.sip.digest import (
    DigestAlgorithm,
    DigestError,
    DigestRealms,
    VerifyStatus,
)
from ringfence.sip.message import Request, Response, make_response
from ringfence.sip.pn import (
    PNSREG_S,
    PNSREG_TAG,
    PushParameterError,
    is_push_contact,
    push_parameters,
    without_push_parameters as uri_without_push_parameters,
)
from ringfence.sip.randomness import random_hex
from ringfence.sip.transaction import Address
from ringfence.sip.uri import SipURI, URIError, parse_name_addr, parse_uri
from ringfence.state.location import (
    Binding,
    LocationService,
    LocationServiceError,
    MemoryLocationService,
)
from ringfence.state.ratelimit import AuthFailureGuard

__all__ = ["Accounts", "Registrar"]

logger = logging.getLogger(__name__)

Headers = tuple[tuple[str, str], ...]

#: §10.3 step 5: "If the address-of-record is not valid for the domain in the Request-URI,
#: the registrar MUST send a 404": another tenant's domain there. A Request-URI that names
#: this node by address (phones set up with an IP) serves every tenant.
_OTHER_DOMAIN = "Not Found in the Request-URI's domain"

#: How a refused digest check is answered: (status, reason, stale). A 401 carries fresh
#: challenges, so a client can retry with a new nonce; stale=true only when the response was
#: right and the nonce merely too old, so the client retries without asking its user for the
#: password again (RFC 7616 §3.3). A wrong password is a 401 too (RFC 3261 §22.4: the
#: credentials did not authenticate the request), as is a replayed nonce-count (RFC 7616
#: §3.4: the count must increase): neither can succeed without the password.
_REFUSALS: dict[VerifyStatus, tuple[int, str, bool]] = {
    VerifyStatus.STALE: (401, "Unauthorized", True),
    VerifyStatus.WRONG_RESPONSE: (401, "Unauthorized", False),
    VerifyStatus.INVALID_NONCE: (401, "Unauthorized", False),
    VerifyStatus.REALM_MISMATCH: (401, "Unauthorized", False),
    VerifyStatus.REPLAYED_NONCE_COUNT: (401, "Unauthorized", False),
    VerifyStatus.UNSUPPORTED_ALGORITHM: (401, "Unauthorized", False),
    VerifyStatus.UNSUPPORTED_QOP: (401, "Unauthorized", False),
    # qop=auth without cnonce or nc, or an empty uri: the client is broken, not unauthorised.
    VerifyStatus.MISSING_PARAMETER: (400, "Malformed Authorization", False),
}


class Accounts(Protocol):
    """What the registrar needs of provisioning (`ProvisioningService` has it)."""

    async def is_tenant_domain(self, domain: str) -> bool: ...

    async def sip_credentials(self, domain: str, username: str) -> SipCredentials | None: ...

    def cached_tenant_domain(self, domain: str) -> bool | None: ...

    def cached_sip_credentials(
        self, domain: str, username: str
    ) -> SipCredentials | Literal[NotLoaded.NOT_LOADED] | None: ...


class Registrar:
    """Answers REGISTER requests and keeps the location service up to date.

    Time is an argument: `now` is in seconds on the clock the location service's bindings use
    (the SIP driver's), and also dates the digest nonces. Nonces are checked statelessly
    against `nonce_secret`, so every node sharing it accepts them (`sip.digest`).
    """

    def __init__(
        self,
        accounts: Accounts,
        location: LocationService,
        nonce_secret: bytes,
        policy: RegistrarPolicy = DEFAULT_POLICY,
        *,
        nonce_lifetime_s: float = 300.0,
        digest_algorithms: tuple[DigestAlgorithm, ...] = (
            DigestAlgorithm.SHA256,
            DigestAlgorithm.MD5,
        ),
        guard: AuthFailureGuard | None = None,
        clock: Clock | None = None,
        nonce_scope: int = 0,
        push_services: frozenset[str] = frozenset(),
    ) -> None:
        """Create the registrar.

        Args:
            accounts: The tenants' accounts and their digest secrets.
            location: Where bindings live.
            nonce_secret: The HMAC key of digest nonces, 16 bytes or more.
            policy: Expiry bounds and limits.
            nonce_lifetime_s: How long a nonce stays fresh before it is answered as stale.
            digest_algorithms: The challenges offered, in order of preference (RFC 8760).
            guard: Failure limits per source address; None: no limits.
            clock: The wall clock, for the Date of a 200 (RFC 3261 §10.3 step 8).
            nonce_scope: This worker process's number (`sip.digest.DigestServer` scope).
            push_services: The RFC 8599 push services that can wake devices here (`apns`,
                `fcm`, `webhook`); a REGISTER asking for another is answered 555.

        Raises:
            ValueError: The secret is shorter than 16 bytes or the lifetime is not positive.
        """
        if len(nonce_secret) < 16:
            raise ValueError("the digest nonce secret must be at least 16 bytes")
        if nonce_lifetime_s <= 0:
            raise ValueError("nonce_lifetime_s must be positive")
        self._accounts = accounts
        self._guard = guard
        self._clock = clock or SystemClock()
        self._date_cache: tuple[datetime, str] | None = None
        self._location = location
        self._policy = policy
        self._push_services = push_services
        # One digest server per realm (tenant SIP domain): each keeps its nonce-count table.
        self._realms = DigestRealms(
            nonce_secret,
            nonce_lifetime_s=nonce_lifetime_s,
            algorithms=digest_algorithms,
            scope=nonce_scope,
        )

    @property
    def policy(self) -> RegistrarPolicy:
        """The expiry bounds and limits in force."""
        return self._policy

    async def handle(self, request: Request, source: Address, now: float) -> Response:
        """Answer one REGISTER (RFC 3261 §10.3), updating the AOR's bindings on success.

        Args:
            request: The request; anything but REGISTER is answered 405.
            source: Where it came from (transport, address, port and flow).
            now: The current time on the bindings' clock, in seconds.

        Returns:
            The response, with a To tag; never raises for anything a peer can send.
        """
        aor = self._check(request, source, now)
        if isinstance(aor, Response):
            return aor
        account = await self._accounts.sip_credentials(aor.domain, aor.user)
        if account is None:
            if not await self._accounts.is_tenant_domain(aor.domain):
                # §10.3 step 1 in spirit: we keep no bindings for this domain.
                return self._respond(request, 403, "Domain not served here")
            if self._guard is not None:
                self._guard.failed(source.host, None, now)  # user enumeration counts as failure
            # §10.3 step 5: "If the address-of-record is not valid for the domain ... 404".
            return self._respond(request, 404, "Not Found")
        host = _request_host(request.uri)
        if host is not None and host != aor.domain and await self._accounts.is_tenant_domain(host):
            return self._respond(request, 404, _OTHER_DOMAIN)
        refusal = self._authorise(request, aor, account, source, now)
        if refusal is not None:
            return refusal
        key = str(aor)
        try:
            existing = await self._location.lookup(key, now)
            response, bindings = self._update(request, key, account, existing, source, now)
            if bindings is not None:
                await self._location.replace(key, bindings, now)
        except LocationServiceError:
            # §10.3 step 7: "If any one of them fails (for example, because the back-end
            # database commit failed), the request MUST fail with a 500 (Server Error)".
            logger.warning("location service failed; REGISTER answered 500")
            return self._respond(request, 500, "Server Internal Error")
        return response

    def handle_now(
        self, request: Request, source: Address, now: float, location: MemoryLocationService
    ) -> Response | None:
        """`handle` without awaiting, for the UDP fast path (`registrar.fast`).

        The same steps and answers, with the accounts and domains read from memory and
        `location` (the one this registrar writes to) written directly. None when an answer
        would need the database (an account or the domain list not loaded, an unknown user):
        nothing has changed then, and `handle` takes the request.
        """
        aor = self._check(request, source, now)
        if isinstance(aor, Response):
            return aor
        account = self.cached_account(aor.domain, aor.user)
        if account is None:
            return None
        host = _request_host(request.uri)
        if host is not None and host != aor.domain:
            other = self._accounts.cached_tenant_domain(host)
            if other is None:
                return None
            if other:
                return self._respond(request, 404, _OTHER_DOMAIN)
        refusal = self._authorise(request, aor, account, source, now)
        if refusal is not None:
            return refusal
        key = str(aor)
        response, bindings = self._update(
            request, key, account, location.lookup_now(key, now), source, now
        )
        if bindings is not None:
            location.replace_now(key, bindings, now)
        return response

    def blocked(self, host: str, user: str, now: float) -> bool:
        """Whether the failure limits refuse `user`'s REGISTERs from `host` now."""
        return self._guard is not None and self._guard.blocked(host, user, now)

    def cached_account(self, domain: str, user: str) -> SipCredentials | None:
        """The account's credentials if they are in memory; None if unknown or not loaded."""
        account = self._accounts.cached_sip_credentials(domain, user)
        return None if account is NOT_LOADED else account

    def _check(self, request: Request, source: Address, now: float) -> Response | AddressOfRecord:
        """The method, the AOR (step 5's syntax) and the failure limits: a refusal or the AOR."""
        if request.method != "REGISTER":
            return self._respond(request, 405, "Method Not Allowed", (("Allow", "REGISTER"),))
        try:
            aor = address_of_record(request)
        except RegistrarError as refusal:
            return self._respond(request, refusal.status, refusal.reason, refusal.headers)
        if self.blocked(source.host, aor.user, now):
            return self._respond(request, 403, AuthFailureGuard.REASON)
        return aor

    def _authorise(
        self,
        request: Request,
        aor: AddressOfRecord,
        account: SipCredentials,
        source: Address,
        now: float,
    ) -> Response | None:
        """Steps 3-4: None when `account` may change the AOR's bindings, else the refusal."""
        answer = self.authenticate(
            request.headers.get_all("Authorization"),
            request.method,
            request.uri,
            aor.user,
            account,
            source,
            now,
        )
        if answer is not None:
            status, reason, headers = answer
            return self._respond(request, status, reason, headers)
        if not account.active:
            # §10.3 step 4: authenticated, but not allowed to register.
            return self._respond(request, 403, "Account suspended")
        return None

    def _update(
        self,
        request: Request,
        key: str,
        account: SipCredentials,
        existing: list[Binding],
        source: Address,
        now: float,
    ) -> tuple[Response, list[Binding] | None]:
        """Steps 6-8 over the AOR's bindings: the response, and the bindings to store."""
        services: set[str] = set()
        refresh = False
        if account.push:
            refusal, refresh = self._check_push(request, services)
            if refusal is not None:
                return refusal, None
        outcome = process_register(
            request, aor=key, existing=existing, source=source, now=now, policy=self._policy
        )
        bindings: list[Binding] | None = None
        if outcome.bindings is not None:
            bindings = list(outcome.bindings)
            if not account.push:
                # P1/P4: with another background mode configured, the RFC 8599 push
                # parameters (device tokens) are not kept, even in memory.
                bindings = [without_push_parameters(b) for b in bindings]
            elif services:
                # RFC 8599: the device may now sleep; its binding is kept, to wake it by
                # push, until the account's push instance max age (P3).
                old = {id(binding) for binding in existing}
                keep_until = now + account.push_max_age_s
                pushed_at = self._clock.now().timestamp()
                bindings = [
                    dataclasses.replace(b, keep_until=keep_until, pushed_at=pushed_at)
                    if id(b) not in old and is_push_contact(b.contact)
                    else b
                    for b in bindings
                ]
        headers = outcome.headers
        if outcome.status == 200:
            # §10.3 step 8: a Date lets a phone without a clock of its own set one.
            headers = (*headers, ("Date", self.date()))
            if services:
                # RFC 8599 (proxy behaviour for REGISTER): +sip.pns tells the UA that
                # requests for it will be announced by pushes of this service; without it
                # the UA must stay awake.
                pns = ",".join(sorted(services))
                caps = f'*;+sip.pns="{pns}"'
                if refresh:
                    # RFC 8599 §5.3: the UA asked (+sip.pnsreg in its Contact) to be woken
                    # to refresh its binding; the push comes PNSREG_S before expiry.
                    caps += f';{PNSREG_TAG}="{PNSREG_S}"'
                headers = (*headers, ("Feature-Caps", caps))
        return self._respond(request, outcome.status, outcome.reason, headers), bindings

    def _check_push(self, request: Request, services: set[str]) -> tuple[Response | None, bool]:
        """RFC 8599: refuse push parameters we cannot honour; note the services used.

        Returns:
            The refusal, if any, and whether a push Contact asked for binding-refresh
            pushes (`+sip.pnsreg`).
        """
        refresh = False
        for value in request.headers.values("Contact"):
            if "pn-provider" not in value.lower():
                continue  # the common case, decided without parsing
            try:
                uri = parse_name_addr(value).uri
            except URIError:
                continue  # process_register answers 400 for it
            if not isinstance(uri, SipURI):
                continue
            try:
                found = push_parameters(uri)
            except PushParameterError as exc:
                return self._respond(request, 400, f"Bad push parameters: {exc}"), False
            if found is None:
                continue
            if found.service not in self._push_services:
                # RFC 8599: 555 Push Notification Service Not Supported, naming the
                # services we do support.
                supported = ",".join(sorted(self._push_services))
                headers: Headers = (("Feature-Caps", f'*;+sip.pns="{supported}"'),)
                return self._respond(
                    request, 555, "Push Notification Service Not Supported", headers
                ), False
            services.add(found.provider)
            refresh = refresh or PNSREG_TAG in value.lower()
        return None, refresh

    def date(self) -> str:
        """The wall clock as an rfc1123-date (RFC 3261 §20.17), formatted once a second."""
        now = self._clock.now().replace(microsecond=0)
        if self._date_cache is None or self._date_cache[0] != now:
            self._date_cache = (now, format_datetime(now, usegmt=True))
        return self._date_cache[1]

    async def bindings(self, aor: str, now: float) -> list[Binding]:
        """The live bindings of a canonical AOR, for the proxy (RFC 3261 §16.5 targets).

        Args:
            aor: `sip:user@domain`, domain lowercased.
            now: The current time on the bindings' clock.

        Returns:
            The bindings in registration order.
        """
        return await self._location.lookup(aor, now)

    async def flow_closed(self, flow_id: str) -> int:
        """Forget every binding registered over a flow that has closed (RFC 5626 §7).

        Args:
            flow_id: The flow (connection) id the transport gave the flow.

        Returns:
            How many bindings were removed.
        """
        removed = await self._location.remove_flow(flow_id)
        if removed:
            logger.debug("flow closed; %d binding(s) removed", removed)
        return removed

    def authenticate(
        self,
        authorization: Sequence[str],
        method: str,
        request_uri: str,
        user: str,
        account: SipCredentials,
        source: Address,
        now: float,
    ) -> tuple[int, str, Headers] | None:
        """Steps 3-4 for a REGISTER of `user`: None when authenticated, else the answer.

        Args:
            authorization: The request's Authorization values.
            method: The request method (REGISTER).
            request_uri: The Request-URI, as sent.
            user: The AOR's user (the To user).
            account: Its credentials.
            source: Where the request came from (the failure limits count per address).
            now: The current time, on the clock nonces are dated with.

        Returns:
            None, or the status, reason phrase and header fields to answer with (a 401 with
            fresh challenges, a 400 or a 403).
        """
        # RFC 8760 §3 / provisioning: the realm is the tenant's SIP domain, HA1 is over it.
        realm = account.tenant.sip_domain
        try:
            credentials = self._realms.credentials_for(authorization, realm)
        except DigestError:
            return 400, "Malformed Authorization", ()
        if credentials is None:
            return 401, "Unauthorized", self._challenges(realm, now, stale=False)
        if credentials.username != user:
            # §10.3 step 4: only the AOR's own user may change its bindings.
            return 403, "Credentials do not match the To user", ()
        if not _same_uri(credentials.uri, request_uri):
            # RFC 7616 §3.4.6 says SHOULD refuse with 400 when the digest-uri is not the
            # Request-URI. Deployed clients disagree (SIPp puts the server's address there),
            # and Kamailio does not check either. The response still covers the uri it names,
            # and nonce-counts stop any replay, so we accept it and only note it.
            logger.debug("REGISTER digest uri differs from the Request-URI")
        result = self._realms.server(realm).verify(credentials, method, account.ha1, now)
        if result.ok:
            if self._guard is not None:
                self._guard.succeeded(source.host, user)
            return None
        logger.debug("REGISTER digest check failed: %s", result.status.value)
        if result.status is VerifyStatus.WRONG_RESPONSE and self._guard is not None:
            self._guard.failed(source.host, user, now)
        status, reason, stale = _REFUSALS[result.status]
        if status == 401:
            return status, reason, self._challenges(realm, now, stale=stale)
        return status, reason, ()

    def _challenges(self, realm: str, now: float, *, stale: bool) -> Headers:
        # RFC 8760 §2.3: one WWW-Authenticate per algorithm, most preferred first.
        return self._realms.challenge_headers(realm, "WWW-Authenticate", now, stale=stale)

    @staticmethod
    def _respond(request: Request, status: int, reason: str, headers: Headers = ()) -> Response:
        # Reason phrases never quote the request, so they are safe to log.
        logger.debug("REGISTER answered %d %s", status, reason)
        # §8.2.6.2: a UAS adds a To tag to its responses; retransmissions of this response
        # are the transaction layer's, which keeps the tag.
        return make_response(request, status, reason, to_tag=random_hex(8), headers=headers)


def without_push_parameters(binding: Binding) -> Binding:
    """The binding without RFC 8599 `pn-*` parameters, in its Contact URI or beside it."""
    kept = tuple(
        (name, value) for name, value in binding.params if not name.lower().startswith("pn-")
    )
    contact = binding.contact
    if "pn-" in contact.lower():
        try:
            uri = parse_uri(contact)
        except URIError:
            uri = None
        if isinstance(uri, SipURI):
            contact = str(uri_without_push_parameters(uri))
    return dataclasses.replace(
        binding, params=kept, contact=contact, keep_until=None, pushed_at=0.0
    )


def _request_host(request_uri: str) -> str | None:
    """The Request-URI's host, lowercased; None when it is not a SIP URI."""
    try:
        uri = parse_uri(request_uri)
    except URIError:
        return None  # the transport driver refused such a Request-URI already
    return uri.host.lower() if isinstance(uri, SipURI) else None


def _same_uri(digest_uri: str, request_uri: str) -> bool:
    if digest_uri == request_uri:
        return True
    try:
        a, b = parse_uri(digest_uri), parse_uri(request_uri)
    except URIError:
        return False
    return isinstance(a, SipURI) and isinstance(b, SipURI) and sip_uri_equal(a, b)
