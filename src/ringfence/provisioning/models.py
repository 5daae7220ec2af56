"""Tenants, accounts and devices as the services see them."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ringfence.provisioning.features import FeatureConfig

#: A tenant code: what the app types after the `@` of its login (`alice@acme`).
TENANT_CODE_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
#: A SIP domain: a DNS name (RFC 3261 §25.1 hostname), lowercase.
SIP_DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
)
#: A username: the user part of the SIP URI, restricted to RFC 3261 §25.1 `unreserved`
#: characters so it never needs escaping in a URI, a header or Account XML.
USERNAME_RE = re.compile(r"^[A-Za-z0-9._~+-]{1,64}$")
#: E.164: a plus, a country code not starting with 0, at most 15 digits in all.
E164_RE = re.compile(r"^\+[1-9][0-9]{1,14}$")
#: An email address for notices: a dot-atom local part (RFC 5322 §3.4.1) at a DNS name.
EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
EMAIL_MAX_CHARS = 254


class AccountStatus(enum.StrEnum):
    ACTIVE = "active"
    #: Cannot log in or register; data kept.
    SUSPENDED = "suspended"


class Platform(enum.StrEnum):
    IOS = "ios"
    ANDROID = "android"
    DESKTOP = "desktop"
    WEB = "web"


class UpstreamTransport(enum.StrEnum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"


@dataclass(frozen=True, slots=True)
class UpstreamPbx:
    """The provider's own PBX, in overlay mode (DESIGN.md, "Two ways to deploy").

    The tenant's devices hand ringfence their SIP account on this PBX; ringfence keeps it
    registered there on their behalf (ringfence.overlay).

    Attributes:
        host: The PBX's DNS name or IP address: where REGISTERs go.
        port: Its port; None: RFC 3263 (SRV, else 5060, or 5061 for TLS).
        transport: How ringfence reaches it.
        outbound_proxy: A proxy every request to the PBX goes through first (RFC 3261
            §8.1.2), as `host[:port]`; None: straight to `host`.
        expires_s: The registration interval asked for; the PBX may grant less.
    """

    host: str
    port: int | None = None
    transport: UpstreamTransport = UpstreamTransport.UDP
    outbound_proxy: str | None = None
    expires_s: int = 3600

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "transport": self.transport.value,
            "outbound_proxy": self.outbound_proxy,
            "expires_s": self.expires_s,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UpstreamPbx:
        return cls(
            host=data["host"],
            port=data.get("port"),
            transport=UpstreamTransport(data.get("transport", "udp")),
            outbound_proxy=data.get("outbound_proxy"),
            expires_s=int(data.get("expires_s", 3600)),
        )


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    code: str
    name: str
    sip_domain: str
    defaults: FeatureConfig
    created_at: datetime
    #: Overlay mode: the PBX the tenant's accounts live on. None: standalone.
    upstream: UpstreamPbx | None = None


@dataclass(frozen=True, slots=True)
class StoredAccount:
    """An account row as stored: personal fields are envelopes sealed with its own key."""

    id: str
    tenant_id: str
    #: The SIP user name's blind index (`ringfence.crypto.blind`): what lookups compare.
    username_key: str
    username_sealed: bytes
    status: AccountStatus
    display_name_sealed: bytes | None
    e164_sealed: bytes | None
    ha1_md5_sealed: bytes
    ha1_sha256_sealed: bytes
    overrides: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    email_sealed: bytes | None = None


@dataclass(frozen=True, slots=True)
class Account:
    """An account with its personal fields opened, as services hand it to an authorised caller."""

    id: str
    tenant: Tenant
    username: str
    status: AccountStatus
    display_name: str | None
    e164: str | None
    overrides: dict[str, Any]
    config: FeatureConfig
    created_at: datetime
    updated_at: datetime
    #: Where notices go (P18): policy changes before they take effect.
    email: str | None = None

    @property
    def aor(self) -> str:
        """The address of record, `sip:user@domain`."""
        return f"sip:{self.username}@{self.tenant.sip_domain}"


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    account_id: str
    #: The install id's blind index (`ringfence.crypto.blind`): the id itself is not kept.
    install_key: str
    platform: Platform
    app_id: str | None
    created_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True, slots=True)
class AccountChange:
    """What an update changes; `None` leaves a field as it is."""

    display_name: str | None = None
    clear_display_name: bool = False
    e164: str | None = None
    clear_e164: bool = False
    email: str | None = None
    clear_email: bool = False
    status: AccountStatus | None = None
    password: str | None = None
    overrides: dict[str, Any] | None = field(default=None)
