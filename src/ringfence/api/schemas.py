"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from ringfence.privacy.policy import Channel, PolicyVersion
from ringfence.privacy.postmortem import DirectiveAction
from ringfence.privacy.requests import RequestKind
from ringfence.privacy.text import MAX_SHORT, MAX_TEXT
from ringfence.provisioning.features import FeatureConfig, LocationMode, PushMode
from ringfence.provisioning.models import (
    Account,
    AccountStatus,
    Platform,
    Tenant,
    UpstreamPbx,
    UpstreamTransport,
)
from ringfence.provisioning.service import (
    DISPLAY_NAME_MAX_CHARS,
    PASSWORD_MAX_CHARS,
    PASSWORD_MIN_CHARS,
)

TenantCode = Annotated[str, StringConstraints(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")]
#: `models.SIP_DOMAIN_RE` without its look-ahead, which the schema's regex engine lacks (the
#: length bound is `max_length`). Declared, like the code and username patterns, so the OpenAPI
#: document states it; here `$` is the end of the text, where Python's `re.match` also lets a
#: final newline through (`"sip.example.com\n"` was once accepted).
SipDomain = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=253,
        pattern=r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$",
    ),
]
Username = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._~+-]{1,64}$")]
Password = Annotated[
    str, StringConstraints(min_length=PASSWORD_MIN_CHARS, max_length=PASSWORD_MAX_CHARS)
]
DisplayName = Annotated[str, StringConstraints(min_length=1, max_length=DISPLAY_NAME_MAX_CHARS)]
E164 = Annotated[str, StringConstraints(pattern=r"^\+[1-9][0-9]{1,14}$")]
Email = Annotated[str, StringConstraints(min_length=3, max_length=254)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- device API -----------------------------------------------------------------------------


class DeviceIn(_In):
    #: The app's installation id: random, made by the app, stable across launches.
    install_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{8,128}$")]
    platform: Platform
    app_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,255}$")] | None = None


class LoginIn(_In):
    login: Annotated[str, StringConstraints(min_length=3, max_length=320)] = Field(
        description="username@tenant (tenant code or SIP domain)", examples=["alice@demo"]
    )
    password: Annotated[str, StringConstraints(min_length=1, max_length=PASSWORD_MAX_CHARS)]
    device: DeviceIn | None = None


class RefreshIn(_In):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - the scheme name, not a secret
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


class SipOut(BaseModel):
    domain: str
    username: str
    auth_username: str
    aor: str


class AccountSelfOut(BaseModel):
    username: str
    tenant: str
    display_name: str | None
    e164: str | None
    status: AccountStatus
    updated_at: datetime


class ProvisioningOut(BaseModel):
    account: AccountSelfOut
    sip: SipOut
    features: FeatureConfig


def provisioning_out(account: Account) -> ProvisioningOut:
    return ProvisioningOut(
        account=AccountSelfOut(
            username=account.username,
            tenant=account.tenant.code,
            display_name=account.display_name,
            e164=account.e164,
            status=account.status,
            updated_at=account.updated_at,
        ),
        sip=SipOut(
            domain=account.tenant.sip_domain,
            username=account.username,
            auth_username=account.username,
            aor=account.aor,
        ),
        features=account.config,
    )


class PushInstanceIn(_In):
    """A device's push tokens (P3: kept sealed for the account's max age, then erased)."""

    service: Literal["apns", "fcm", "webhook"] = Field(
        description="The push service that reaches the app"
    )
    app_id: Annotated[str, StringConstraints(max_length=200)] = Field(
        default="",
        description="APNs: the bundle id (without .voip); FCM: the Firebase project id",
        examples=["org.example.phone"],
    )
    call_token: Annotated[str, StringConstraints(max_length=4096)] | None = Field(
        default=None,
        description="APNs: the PushKit (VoIP) token in hex, that calls are pushed to",
    )
    other_token: Annotated[str, StringConstraints(max_length=4096)] | None = Field(
        default=None,
        description="The token for alerts and messages (FCM: the registration token; "
        "webhook: the endpoint's https URL)",
    )
    sandbox: bool = Field(default=False, description="An APNs development-environment token")
    sip_instance: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        default=None,
        description="The +sip.instance of the app's REGISTER (urn:uuid:…): tells the "
        "server when the device is awake",
    )
    sip_account: SipAccountIn | None = Field(
        default=None,
        description="Overlay mode: the account on the tenant's PBX that ringfence keeps "
        "registered while the app sleeps. Accepted over HTTPS only (P2); sealed with the "
        "instance's own key and erased with it (P3)",
    )


class SipAccountIn(_In):
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    domain: Annotated[str, StringConstraints(min_length=1, max_length=259)] = Field(
        description="The domain of the address-of-record on the PBX", examples=["pbx.example.com"]
    )
    auth_username: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    password: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None, description="The password, or"
    )
    ha1: Annotated[str, StringConstraints(min_length=32, max_length=32)] | None = Field(
        default=None, description="MD5(username:realm:password) in hex"
    )


class PushInstanceOut(BaseModel):
    selector: str
    service: str
    app_id: str
    has_call_token: bool
    has_other_token: bool
    sandbox: bool
    sip_instance: str | None
    #: Overlay mode: the address-of-record kept registered on the PBX (never the secret).
    sip_aor: str | None = None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime


# -- admin API ------------------------------------------------------------------------------


class PushOverride(_In):
    mode: PushMode | None = None
    instance_max_age_days: Annotated[int, Field(ge=3, le=6)] | None = None


class SwitchOverride(_In):
    enabled: bool | None = None


class LocationOverride(_In):
    mode: LocationMode | None = None
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = None


class AttachmentsOverride(_In):
    enabled: bool | None = None
    max_size_bytes: Annotated[int, Field(ge=1, le=1024 * 1024 * 1024)] | None = None
    retention_days: Annotated[int, Field(ge=1, le=365)] | None = None


class MessagingOverride(_In):
    enabled: bool | None = None
    retention_days: Annotated[int, Field(ge=1, le=3650)] | None = None


class FeatureOverrides(_In):
    """Account overrides of the tenant's defaults; a `null` removes that override."""

    push: PushOverride | None = None
    smart_contacts: SwitchOverride | None = None
    blf: SwitchOverride | None = None
    location: LocationOverride | None = None
    attachments: AttachmentsOverride | None = None
    messaging: MessagingOverride | None = None
    calendar: SwitchOverride | None = None
    analytics: SwitchOverride | None = None
    debug_logs: SwitchOverride | None = None

    def as_change(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


class UpstreamIn(_In):
    """Overlay mode: the PBX the tenant's accounts live on (DESIGN.md, "Two ways to deploy")."""

    host: Annotated[str, StringConstraints(min_length=1, max_length=253)] = Field(
        description="The PBX's DNS name or IP address, where REGISTERs go",
        examples=["pbx.example.com"],
    )
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Absent: RFC 3263 (SRV, else 5060/5061)"
    )
    transport: Literal["udp", "tcp", "tls"] = "udp"
    outbound_proxy: Annotated[str, StringConstraints(max_length=260)] | None = Field(
        default=None,
        description="host[:port] of a proxy every request to the PBX goes through first",
    )
    expires_s: int = Field(
        default=3600, ge=60, le=86_400, description="The registration interval asked for"
    )

    def model(self) -> UpstreamPbx:
        return UpstreamPbx(
            host=self.host.lower(),
            port=self.port,
            transport=UpstreamTransport(self.transport),
            outbound_proxy=self.outbound_proxy.lower() if self.outbound_proxy else None,
            expires_s=self.expires_s,
        )

    @classmethod
    def of(cls, upstream: UpstreamPbx | None) -> UpstreamIn | None:
        if upstream is None:
            return None
        return cls(
            host=upstream.host,
            port=upstream.port,
            transport=upstream.transport.value,
            outbound_proxy=upstream.outbound_proxy,
            expires_s=upstream.expires_s,
        )


class TenantIn(_In):
    code: TenantCode
    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    sip_domain: SipDomain
    defaults: FeatureConfig | None = None
    upstream: UpstreamIn | None = Field(
        default=None, description="Overlay mode: the tenant's PBX; absent: standalone"
    )


class TenantPatch(_In):
    name: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    defaults: FeatureConfig | None = None
    upstream: UpstreamIn | None = Field(
        default=None, description="The tenant's PBX; null makes the tenant standalone again"
    )


class TenantOut(BaseModel):
    code: str
    name: str
    sip_domain: str
    defaults: FeatureConfig
    created_at: datetime
    upstream: UpstreamIn | None = None

    @classmethod
    def of(cls, tenant: Tenant) -> TenantOut:
        return cls(
            code=tenant.code,
            name=tenant.name,
            sip_domain=tenant.sip_domain,
            defaults=tenant.defaults,
            created_at=tenant.created_at,
            upstream=UpstreamIn.of(tenant.upstream),
        )


class AccountIn(_In):
    username: Username
    password: Password
    display_name: DisplayName | None = None
    e164: E164 | None = None
    email: Email | None = Field(default=None, description="Where policy notices go (P18)")
    config: FeatureOverrides | None = None


class AccountPatch(_In):
    """Fields to change; `display_name`, `e164` or `email` set to null clears it."""

    password: Password | None = None
    display_name: DisplayName | None = None
    e164: E164 | None = None
    email: Email | None = None
    status: AccountStatus | None = None
    config: FeatureOverrides | None = None


class AccountOut(BaseModel):
    id: str
    tenant: str
    username: str
    aor: str
    status: AccountStatus
    display_name: str | None
    e164: str | None
    email: str | None
    overrides: dict[str, Any]
    config: FeatureConfig
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, account: Account) -> AccountOut:
        return cls(
            id=account.id,
            tenant=account.tenant.code,
            username=account.username,
            aor=account.aor,
            status=account.status,
            display_name=account.display_name,
            e164=account.e164,
            email=account.email,
            overrides=account.overrides,
            config=account.config,
            created_at=account.created_at,
            updated_at=account.updated_at,
        )


class AccountConfigOut(BaseModel):
    overrides: dict[str, Any]
    effective: FeatureConfig


# -- disclosure register (P17) ----------------------------------------------------------------

ShortText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_SHORT)]
LongText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT)]


class SubjectIn(_In):
    tenant: TenantCode
    username: Username


class DisclosureIn(_In):
    """A request from an authority, recorded when it arrives."""

    authority: ShortText = Field(examples=["Metropolitan Police Service"])
    reference: ShortText = Field(description="The authority's case or warrant number")
    legal_basis: LongText = Field(description="The law or order the request rests on")
    requested: LongText = Field(description="What the authority asks for")
    subject: SubjectIn | None = None


class DecisionIn(_In):
    """The decision on a request: final once recorded."""

    disclosed: bool = Field(description="True: data was handed over; false: refused")
    given: LongText = Field(description="Exactly what was handed over, or why not")
    approved_by: ShortText


class HoldIn(_In):
    reason: LongText = Field(examples=["Production order pending: keep until the court decides"])
    reference: ShortText = Field(description="The order's or request's reference")
    placed_by: ShortText


class ReleaseIn(_In):
    released_by: ShortText


class RectificationIn(_In):
    """Corrected personal fields; null clears one."""

    display_name: DisplayName | None = None
    e164: E164 | None = None
    email: Email | None = None


class PrivacyRequestIn(_In):
    #: Post-mortem requests come from a verified notice of death, not from the app.
    kind: Literal[
        RequestKind.CONFIRMATION,
        RequestKind.ACCESS,
        RequestKind.RECTIFICATION,
        RequestKind.ERASURE,
    ]
    changes: RectificationIn | None = Field(default=None, description="For a rectification")

    def change_map(self) -> dict[str, str | None] | None:
        """The fields the request sets (an explicit null clears one)."""
        if self.changes is None:
            return None
        return {name: getattr(self.changes, name) for name in self.changes.model_fields_set}


class AwaitingDocumentIn(_In):
    """A request whose requester will be verified by an ID document (the last resort)."""

    kind: Literal[RequestKind.CONFIRMATION, RequestKind.ACCESS, RequestKind.ERASURE]


class AwaitingCodeIn(_In):
    """A request whose requester will be verified by a code texted to the number of record."""

    kind: Literal[RequestKind.CONFIRMATION, RequestKind.ACCESS, RequestKind.ERASURE]


class CodeIn(_In):
    code: Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")] = Field(
        description="The 6 digits texted to the account's number of record"
    )


class CodeSentOut(BaseModel):
    expires_at: datetime


class IdentityDecisionIn(_In):
    accepted: bool = Field(description="True: the document proves the requester's identity")
    verified_by: ShortText


class OperatorRequestIn(PrivacyRequestIn):
    """A request taken by an operator, who checked the requester's identity (P21)."""

    verified_by: ShortText
    evidence: LongText = Field(description="How the identity was checked")


class DirectiveIn(_In):
    """What to do with the account's data on the user's death (P20)."""

    action: DirectiveAction
    trustee: ShortText | None = Field(
        default=None, description="For a hand-over: the person's name and how to reach them"
    )


class DeathNoticeIn(_In):
    """A notice of death, checked against its evidence by the operator (P20, P21)."""

    evidence: LongText = Field(description="The evidence's reference, e.g. the certificate's")
    verified_by: ShortText


class PolicyVersionIn(_In):
    """A new version of the privacy policy (P18)."""

    version: ShortText = Field(examples=["2027-01"])
    summary: LongText = Field(description="What changes, in the users' words")
    effective_at: AwareDatetime = Field(description="At least privacy.min_notice_days ahead")
    url: ShortText | None = Field(default=None, description="Where the full text is")


class NoticeOut(BaseModel):
    """A notice of a policy version, as the app shows it."""

    version: PolicyVersion
    channel: Channel
    sent_at: datetime
    acknowledged_at: datetime | None
