"""Push instances reported over HTTPS: kept sealed, for the account's max age, then erased.

The rules (P3, P4):

- an instance is accepted only when the account's push mode is `push`; otherwise the report
  is refused and nothing is stored (P4);
- it lives `push.instance_max_age_days` (3 to 6) from its last report: each report (the app
  sends one every time it starts) moves its expiry; the sweeper erases it when that passes;
- DELETE, switching push off, and erasing the account erase it at once (P3);
- tokens, app id, selector and SIP instance are sealed with the instance's own key (a
  keyring subject of its own); erasure destroys that key before deleting the row, so a copy
  of the database taken before cannot be read afterwards. The row finds the instance by the
  selector's blind index only.
"""

from __future__ import annotations

import enum
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from ringfence.clock import Clock
from ringfence.crypto import Keyring
from ringfence.crypto.errors import CryptoError
from ringfence.provisioning.errors import ConflictError, InvalidInputError, NotFoundError
from ringfence.provisioning.features import Feature, FeatureConfig
from ringfence.proxy.parking import PushDevice
from ringfence.registrar.rules import instance_urn
from ringfence.sip.pn import PushParameters

#: Keyring subjects of instances: one key per instance, destroyed with it.
SUBJECT_PREFIX = "push-instance:"
#: The envelope context of the sealed report (crypto.envelope).
CTX_REPORT = "push_instance.report"
#: How many expired instances one sweep round erases per store query.
SWEEP_BATCH = 500
#: Instances one account may hold: phones, tablets, desktops, and a few reinstalls.
MAX_INSTANCES_PER_ACCOUNT = 20

#: Acrobits' selector is "SHA1HEX:SUFFIX"; ours are chosen by the app. URL-safe either way.
SELECTOR_RE = re.compile(r"^[A-Za-z0-9:._~-]{1,128}$")
#: APNs device tokens are opaque hex of variable length (64 hex digits today).
APNS_TOKEN_RE = re.compile(r"^(?:[0-9a-f]{2}){8,100}$")
#: FCM registration tokens: base64url text with a colon, about 160 characters.
FCM_TOKEN_RE = re.compile(r"^[A-Za-z0-9:_.\-]{16,4096}$")
#: APNs bundle id, FCM project id.
APP_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
#: The `+sip.instance` URN the app registers with (RFC 5626 §4.1), without brackets.
SIP_INSTANCE_RE = re.compile(r"^urn:[A-Za-z0-9][A-Za-z0-9-]{0,31}:[\x21-\x7e]{1,200}$")
WEBHOOK_URL_MAX = 2048
#: The SIP account a device hands over in overlay mode: RFC 3261 §25.1 user characters
#: (unreserved and user-unreserved, no escapes), a lowercase host, an MD5 HA1 in hex.
SIP_USER_RE = re.compile(r"^[A-Za-z0-9._~+&=$,;?/!*'()-]{1,64}$")
SIP_HOST_RE = re.compile(
    r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
)
HA1_RE = re.compile(r"^[0-9a-f]{32}$")
SIP_PASSWORD_MAX = 128


class PushService(enum.StrEnum):
    APNS = "apns"
    FCM = "fcm"
    WEBHOOK = "webhook"


@dataclass(frozen=True, slots=True)
class SipAccount:
    """The device's account on the tenant's PBX (overlay mode), sealed with the instance.

    Attributes:
        username: The user part of the address-of-record.
        domain: Its domain (the PBX's SIP domain, or its address).
        auth_username: The digest user name, when it is not `username`.
        password: The password; or
        ha1: MD5(username:realm:password) in hex, for apps that keep no password.
    """

    username: str
    domain: str
    auth_username: str | None = None
    password: str | None = field(default=None, repr=False)
    ha1: str | None = field(default=None, repr=False)

    @property
    def aor(self) -> str:
        return f"sip:{self.username}@{self.domain}"


@dataclass(frozen=True, slots=True)
class InstanceReport:
    """What a device reports of itself.

    Attributes:
        selector: Which account on which installation (Acrobits' selector); a new report
            with the same selector replaces the instance.
        service: The push service that reaches the app.
        app_id: APNs: the bundle id (`.voip` is added for call pushes); FCM: the project.
        call_token: The token calls are pushed to: APNs PushKit (VoIP). None: calls go to
            `other_token` (FCM, webhook, or an iOS app without PushKit).
        other_token: The token for every other push (alerts, messages); for a webhook, its
            https URL.
        sandbox: An APNs development-environment token.
        sip_instance: The `+sip.instance` of the app's REGISTER: says when it is awake.
        sip_account: Overlay mode: the SIP account ringfence keeps registered on the PBX.
    """

    selector: str
    service: PushService
    app_id: str
    call_token: str | None = None
    other_token: str | None = None
    sandbox: bool = False
    sip_instance: str | None = None
    sip_account: SipAccount | None = None

    def parameters(self) -> PushParameters:
        """The instance as RFC 8599 push parameters, the form the waker pushes to."""
        tokens: dict[str, str] = {}
        if self.call_token:
            tokens["voip"] = self.call_token
        if self.other_token:
            tokens["remote"] = self.other_token
        return PushParameters(
            self.service.value, self.service.value, self.sandbox, self.app_id, tokens=tokens
        )


@dataclass(frozen=True, slots=True)
class PushInstance:
    """An opened instance."""

    id: str
    account_id: str
    report: InstanceReport
    created_at: datetime
    updated_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """An instance as its row holds it: the report sealed, the selector as a blind index."""

    id: str
    account_id: str
    selector_key: str
    sealed: bytes
    created_at: datetime
    updated_at: datetime
    expires_at: datetime


class InstanceStore(Protocol):
    async def get_instance(self, account_id: str, selector_key: str) -> StoredInstance | None: ...

    async def add_instance(self, instance: StoredInstance) -> None:
        """Raises `ConflictError` when the account already has that selector."""
        ...

    async def update_instance(self, instance: StoredInstance) -> bool:
        """Replace the sealed report and times; False when the row is gone."""
        ...

    async def instances_of(self, account_id: str) -> list[StoredInstance]: ...

    async def count_instances(self, account_id: str) -> int: ...

    async def instance_by_id(self, instance_id: str) -> StoredInstance | None: ...

    async def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` have a row."""
        ...

    async def instances_page(
        self, after_id: str | None, now: datetime, limit: int
    ) -> list[StoredInstance]:
        """Live instances in id order, after `after_id`."""
        ...

    async def delete_instances(self, ids: Sequence[str]) -> int: ...

    async def expired_instances(self, now: datetime, limit: int) -> list[StoredInstance]: ...

    async def accounts_with_instances(self, now: datetime) -> set[str]: ...


class InstanceListener(Protocol):
    """Told of instances reported and erased (the overlay keeps their registrations)."""

    async def instance_reported(self, instance: PushInstance) -> None: ...

    async def instances_erased(self, ids: Sequence[str]) -> None: ...


def subject_of(instance_id: str) -> str:
    return SUBJECT_PREFIX + instance_id


def _invalid(field: str, reason: str) -> InvalidInputError:
    return InvalidInputError(f"{field}: {reason}", field=field)


def check_report(report: InstanceReport) -> InstanceReport:
    """The report with its tokens normalised, or `InvalidInputError` naming the field."""
    if not SELECTOR_RE.fullmatch(report.selector):
        raise _invalid("selector", "must be 1 to 128 letters, digits or :._~-")
    if report.sip_instance is not None:
        instance = report.sip_instance.strip().strip('"').removeprefix("<").removesuffix(">")
        if not SIP_INSTANCE_RE.fullmatch(instance):
            raise _invalid("sip_instance", "must be a URN such as urn:uuid:…")
        # As the registrar keeps it: the woken app's binding must compare equal.
        report = replace(report, sip_instance=instance_urn(instance))
    if report.sip_account is not None:
        if report.sip_instance is None:
            raise _invalid(
                "sip_instance", "a SIP account needs the +sip.instance the app registers with"
            )
        report = replace(report, sip_account=check_sip_account(report.sip_account))
    if report.service is PushService.APNS:
        return _check_apns(report)
    if report.service is PushService.FCM:
        if report.call_token is not None and report.call_token != report.other_token:
            raise _invalid("call_token", "FCM has one token per app: send it as other_token")
        if report.other_token is None or not FCM_TOKEN_RE.fullmatch(report.other_token):
            raise _invalid("other_token", "must be the app's FCM registration token")
        if not APP_ID_RE.fullmatch(report.app_id):
            raise _invalid("app_id", "must be the Firebase project id")
        return replace(report, call_token=None, sandbox=False)
    url = report.other_token or ""
    parts = urlsplit(url)
    if len(url) > WEBHOOK_URL_MAX or parts.scheme != "https" or not parts.hostname:
        raise _invalid("other_token", "must be the endpoint's https URL, at most 2048 characters")
    if report.call_token is not None:
        raise _invalid("call_token", "a webhook has one endpoint: send it as other_token")
    return replace(report, app_id=report.app_id or "", sandbox=False)


def check_sip_account(account: SipAccount) -> SipAccount:
    """The account with its domain lowercased, or `InvalidInputError` naming the field."""
    if not SIP_USER_RE.fullmatch(account.username):
        raise _invalid("sip_account.username", "must be 1 to 64 SIP user characters")
    domain = account.domain.lower()
    host, colon, port = domain.partition(":")
    if not SIP_HOST_RE.fullmatch(host) or (
        colon and not (port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535)
    ):
        raise _invalid("sip_account.domain", "must be the SIP domain, such as pbx.example.com")
    if account.auth_username is not None and not SIP_USER_RE.fullmatch(account.auth_username):
        raise _invalid("sip_account.auth_username", "must be 1 to 64 SIP user characters")
    if (account.password is None) == (account.ha1 is None):
        raise _invalid("sip_account.password", "give the password or its HA1, one of them")
    if account.password is not None and not (
        0 < len(account.password) <= SIP_PASSWORD_MAX and account.password.isprintable()
    ):
        raise _invalid(
            "sip_account.password", f"must be 1 to {SIP_PASSWORD_MAX} printable characters"
        )
    ha1 = account.ha1.lower() if account.ha1 is not None else None
    if ha1 is not None and not HA1_RE.fullmatch(ha1):
        raise _invalid("sip_account.ha1", "must be the MD5 HA1 in hex (32 digits)")
    return replace(account, domain=domain, ha1=ha1)


def _check_apns(report: InstanceReport) -> InstanceReport:
    tokens = {}
    for name in ("call_token", "other_token"):
        token = getattr(report, name)
        if token is None:
            continue
        token = token.lower()
        if not APNS_TOKEN_RE.fullmatch(token):
            raise _invalid(name, "must be the APNs device token in hex")
        tokens[name] = token
    if not tokens:
        raise _invalid("call_token", "an APNs instance needs call_token (PushKit) or other_token")
    if not APP_ID_RE.fullmatch(report.app_id) or report.app_id.endswith(".voip"):
        raise _invalid("app_id", "must be the app's bundle id (without .voip)")
    return replace(report, **tokens)


def _to_json(report: InstanceReport) -> bytes:
    fields: dict[str, Any] = {
        "selector": report.selector,
        "service": report.service.value,
        "app_id": report.app_id,
        "call_token": report.call_token,
        "other_token": report.other_token,
        "sandbox": report.sandbox,
        "sip_instance": report.sip_instance,
    }
    if report.sip_account is not None:
        account = report.sip_account
        fields["sip_account"] = {
            "username": account.username,
            "domain": account.domain,
            "auth_username": account.auth_username,
            "password": account.password,
            "ha1": account.ha1,
        }
    return json.dumps(fields, separators=(",", ":")).encode()


def _from_json(data: bytes) -> InstanceReport:
    fields = json.loads(data)
    return InstanceReport(
        selector=fields["selector"],
        service=PushService(fields["service"]),
        app_id=fields["app_id"],
        call_token=fields["call_token"],
        other_token=fields["other_token"],
        sandbox=fields["sandbox"],
        sip_instance=fields["sip_instance"],
        sip_account=SipAccount(**fields["sip_account"]) if fields.get("sip_account") else None,
    )


class PushInstances:
    """Reports, lists and erases push instances (P3, P4)."""

    def __init__(self, store: InstanceStore, keyring: Keyring, clock: Clock) -> None:
        self._store = store
        self._keyring = keyring
        self._clock = clock
        self._selectors = keyring.blind_index("push_instance.selector")
        #: Accounts with instances, as far as this process knows: a call to any other account
        #: costs the router no database query. `refresh` reloads it (reports come to the
        #: HTTP process; SIP workers learn of them there).
        self._accounts: set[str] = set()
        self._added: set[str] = set()
        #: Told of each report and erasure, in this process (`ringfence.overlay`).
        self.listeners: list[InstanceListener] = []

    async def refresh(self) -> None:
        """Learn which accounts have instances (reported through any process)."""
        self._added = set()
        found = await self._store.accounts_with_instances(self._clock.now())
        self._accounts = found | self._added

    async def report(
        self, account_id: str, config: FeatureConfig, report: InstanceReport
    ) -> tuple[PushInstance, bool]:
        """Keep (or renew) the instance a device reports.

        Returns:
            The instance, and whether it is new.

        Raises:
            FeatureDisabledError: the account's push mode is not `push` (P4): nothing is
                stored.
            InvalidInputError: a field is invalid (named).
            ConflictError: the account holds MAX_INSTANCES_PER_ACCOUNT others.
        """
        config.require(Feature.PUSH)
        report = check_report(report)
        now = self._clock.now()
        expires = now + timedelta(days=config.push.instance_max_age_days)
        key = self._selectors.of(report.selector)
        for _ in range(2):  # a concurrent first report of the same selector: then update
            existing = await self._store.get_instance(account_id, key)
            if existing is not None:
                updated = await self._renew(existing, report, now, expires)
                if updated is not None:
                    await self._reported(updated)
                    return updated, False
                continue
            if await self._store.count_instances(account_id) >= MAX_INSTANCES_PER_ACCOUNT:
                raise ConflictError(
                    f"the account holds {MAX_INSTANCES_PER_ACCOUNT} push instances: delete "
                    "one first",
                    field="selector",
                )
            instance_id = str(uuid.uuid4())
            cipher = await self._keyring.create(subject_of(instance_id))
            stored = StoredInstance(
                instance_id,
                account_id,
                key,
                cipher.seal(CTX_REPORT, _to_json(report)),
                now,
                now,
                expires,
            )
            try:
                await self._store.add_instance(stored)
            except ConflictError:
                await self._keyring.destroy(subject_of(instance_id))
                continue
            except BaseException:
                await self._keyring.destroy(subject_of(instance_id))
                raise
            self._accounts.add(account_id)
            self._added.add(account_id)
            instance = PushInstance(instance_id, account_id, report, now, now, expires)
            await self._reported(instance)
            return instance, True
        raise ConflictError("the instance changed while it was reported: retry", field="selector")

    async def _renew(
        self, existing: StoredInstance, report: InstanceReport, now: datetime, expires: datetime
    ) -> PushInstance | None:
        try:
            cipher = await self._keyring.cipher(subject_of(existing.id))
        except CryptoError:
            return None  # erased meanwhile
        updated = replace(
            existing,
            sealed=cipher.seal(CTX_REPORT, _to_json(report)),
            updated_at=now,
            expires_at=expires,
        )
        if not await self._store.update_instance(updated):
            return None
        return PushInstance(
            existing.id, existing.account_id, report, existing.created_at, now, expires
        )

    async def _reported(self, instance: PushInstance) -> None:
        for listener in self.listeners:
            await listener.instance_reported(instance)

    async def by_id(self, instance_id: str) -> PushInstance | None:
        """The live instance with this id (None: there is none, or it is being erased)."""
        stored = await self._store.instance_by_id(instance_id)
        if stored is None or stored.expires_at <= self._clock.now():
            return None
        opened = await self._open([stored])
        return opened[0] if opened else None

    async def live_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these instances still exist (erased ones, by any process, do not)."""
        return await self._store.existing_ids(ids)

    async def page(self, after_id: str | None, limit: int) -> list[PushInstance]:
        """Live instances in id order after `after_id` (a restart restores them all)."""
        stored = await self._store.instances_page(after_id, self._clock.now(), limit)
        return await self._open(stored)

    async def erase(self, instance_id: str) -> None:
        """Erase one instance at once (P3): the overlay gave it up."""
        stored = await self._store.instance_by_id(instance_id)
        if stored is not None:
            await self._erase([stored])

    async def of(self, account_id: str) -> list[PushInstance]:
        """The account's live instances (an expired one is as good as erased)."""
        now = self._clock.now()
        stored = [i for i in await self._store.instances_of(account_id) if i.expires_at > now]
        return await self._open(stored)

    async def _open(self, stored: Sequence[StoredInstance]) -> list[PushInstance]:
        if not stored:
            return []
        ciphers = await self._keyring.ciphers([subject_of(i.id) for i in stored])
        opened = []
        for item in stored:
            cipher = ciphers.get(subject_of(item.id))
            if cipher is None:
                continue  # its key was destroyed: being erased
            report = _from_json(cipher.open(CTX_REPORT, item.sealed))
            opened.append(
                PushInstance(
                    item.id,
                    item.account_id,
                    report,
                    item.created_at,
                    item.updated_at,
                    item.expires_at,
                )
            )
        return opened

    async def push_devices(self, account_id: str) -> list[PushDevice]:
        """`proxy.router.PushDevices`: the account's instances, as the proxy wakes them."""
        if account_id not in self._accounts:
            return []  # the common case, on the routing path: no query
        return [
            PushDevice(
                instance.report.sip_instance,
                instance.report.parameters(),
                instance.updated_at.timestamp(),
            )
            for instance in await self.of(account_id)
        ]

    async def forget_token(self, account_id: str, token: str) -> int:
        """A push service called `token` dead: erase the instances that hold it."""
        dead = [
            instance.id
            for instance in await self.of(account_id)
            if token in (instance.report.call_token, instance.report.other_token)
        ]
        stored = [i for i in await self._store.instances_of(account_id) if i.id in dead]
        await self._erase(stored)
        return len(stored)

    async def delete(self, account_id: str, selector: str) -> None:
        """Erase the instance at once (P3).

        Raises:
            NotFoundError: the account has no instance with this selector.
        """
        if not SELECTOR_RE.fullmatch(selector):
            raise _invalid("selector", "must be 1 to 128 letters, digits or :._~-")
        stored = await self._store.get_instance(account_id, self._selectors.of(selector))
        if stored is None:
            raise NotFoundError("no push instance with this selector", field="selector")
        await self._erase([stored])

    async def account_erased(self, account_id: str) -> None:
        """`provisioning.AccountListener`: the account is being erased, and its instances."""
        await self.erase_account(account_id)

    async def accounts_reconfigured(self, configs: Sequence[tuple[str, FeatureConfig]]) -> None:
        """`provisioning.AccountListener`: push switched off erases the instances (P3)."""
        await self.reconfigured(configs)

    async def erase_account(self, account_id: str) -> int:
        """Erase every instance of an account (it is being erased, or push went off)."""
        stored = await self._store.instances_of(account_id)
        await self._erase(stored)
        return len(stored)

    async def reconfigured(self, configs: Sequence[tuple[str, FeatureConfig]]) -> int:
        """Accounts whose configuration changed: push switched off erases instances (P3)."""
        erased = 0
        for account_id, config in configs:
            if not config.is_enabled(Feature.PUSH):
                erased += await self.erase_account(account_id)
        return erased

    async def sweep(self) -> int:
        """Erase every instance past its max age (P3); returns how many."""
        erased = 0
        now = self._clock.now()
        while batch := await self._store.expired_instances(now, SWEEP_BATCH):
            await self._erase(batch)
            erased += len(batch)
            if len(batch) < SWEEP_BATCH:
                break
        return erased

    async def _erase(self, stored: Sequence[StoredInstance]) -> None:
        # Keys first: should the row deletion fail, what remains can no longer be read.
        for item in stored:
            await self._keyring.destroy(subject_of(item.id))
        await self._store.delete_instances([item.id for item in stored])
        if stored:
            for listener in self.listeners:
                await listener.instances_erased([item.id for item in stored])
