"""Settings: one typed tree, read once from a TOML file and `RINGFENCE_*` environment variables.

Precedence, highest first: environment variables (`RINGFENCE_SECTION__KEY`), the TOML file,
the embedded defaults. The defaults run everything on one machine: SQLite and the key file in
the data directory, in-memory state, loopback ports. Unknown keys, in the file or in the
environment, are an error that names the key: a typo must never silently fall back to a
default (a mistyped `database_url` would otherwise write to a fresh SQLite file).

Each component receives only its own section, a frozen model.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "RINGFENCE_"
ENV_NESTED_DELIMITER = "__"
#: Environment variables of ours that are not settings.
_ENV_NOT_SETTINGS = frozenset({"RINGFENCE_CONFIG", "RINGFENCE_NEW_PASSWORD"})


class ConfigError(Exception):
    """The configuration cannot be used; the message names each offending key."""


def _async_driver(url: str | None) -> str | None:
    if url and not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
    return url


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HTTPSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    #: Base URL under which apps reach the HTTP API (used in printed hints and Account XML).
    public_url: str | None = None
    #: Serve HTTPS with this certificate chain and key (PEM). Outside loopback, SIP accounts
    #: are accepted over HTTPS only (P2): here, or from a TLS-terminating proxy.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: Take plain HTTP from loopback as confidential (P2): for development on one machine
    #: only. Off, a TLS-terminating proxy must say X-Forwarded-Proto: https (a proxy on
    #: this host that does not would otherwise pass the internet's plain HTTP as loopback).
    trust_loopback: bool = False

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.tls_cert_file else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @model_validator(mode="after")
    def _tls_pair(self) -> HTTPSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        return self


class StorageSettings(_Section):
    #: Where the SQLite database and the key file live by default.
    data_dir: Path = Path("var")
    #: SQLAlchemy URL. Empty: a SQLite file in `data_dir`. PostgreSQL:
    #: `postgresql+asyncpg://user:password@host:5432/ringfence`.
    database_url: str | None = None

    def url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'ringfence.db'}"

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str | None) -> str | None:
        return _async_driver(value)


class KeySettings(_Section):
    #: The key-encryption key file (32 random bytes, base64). Created with mode 0600 on first
    #: run when missing. Default: `<data_dir>/kek.key`.
    kek_file: Path | None = None
    #: The key-encryption key itself (base64 of 32 bytes), for deployments that inject secrets
    #: through the environment (`RINGFENCE_KEYS__KEK`). Takes precedence over the file.
    kek: str | None = Field(default=None, repr=False)
    #: The key store: the database that holds only the subjects' wrapped data keys, apart
    #: from the main database so that its long-kept backups never hold a key (see README,
    #: "Erasure and backups"). Empty: `<data_dir>/keys.db` (SQLite).
    store_url: str | None = None

    @field_validator("store_url")
    @classmethod
    def _known_driver(cls, value: str | None) -> str | None:
        return _async_driver(value)


class AuthSettings(_Section):
    access_token_ttl_s: int = Field(default=900, ge=60, le=86_400)
    refresh_token_ttl_s: int = Field(default=30 * 86_400, ge=3_600, le=365 * 86_400)
    #: Failed logins allowed per account, then per source address, within the window.
    login_failures_per_account: int = Field(default=5, ge=1)
    login_failures_per_address: int = Field(default=20, ge=1)
    login_window_s: int = Field(default=300, ge=1)


class SIPSettings(_Section):
    #: Serve SIP at all (registrar and proxy of the standalone mode).
    enabled: bool = True
    #: Address the SIP listeners bind to.
    host: str = "127.0.0.1"
    #: SIP worker processes. CPython runs Python on one core per process, so a node uses n
    #: cores with n workers (Kamailio's model: they share the sockets; each Call-ID and each
    #: address-of-record has one owner, see ringfence.transport.cluster). Limits such as
    #: rate_per_ip and the auth failure counts apply per worker.
    workers: int = Field(default=1, ge=1, le=64)
    #: What we put in Via and Record-Route; default: `host`.
    public_host: str | None = None
    #: Ports; 0 disables that transport.
    udp_port: int = Field(default=5060, ge=0, le=65535)
    tcp_port: int = Field(default=5060, ge=0, le=65535)
    tls_port: int = Field(default=5061, ge=0, le=65535)
    ws_port: int = Field(default=8088, ge=0, le=65535)
    #: TLS certificate and key (PEM). Empty: a self-signed pair made on first start in
    #: `<data_dir>/tls/`.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: Registration interval bounds (RFC 3261 §10.3: 423 below the minimum).
    min_expires_s: int = Field(default=60, ge=1)
    max_expires_s: int = Field(default=3600, ge=60)
    default_expires_s: int = Field(default=3600, ge=60)
    #: Digest challenges, in order of preference (RFC 8760 §2.3). Put "MD5" alone or first
    #: for clients that answer only the first challenge and know only MD5 (SIPp 3.6).
    digest_algorithms: tuple[Literal["SHA-256", "MD5"], ...] = Field(
        default=("SHA-256", "MD5"), min_length=1
    )
    #: How long a digest nonce stays fresh before the client is told it is stale.
    nonce_lifetime_s: int = Field(default=300, ge=10, le=3600)
    #: Static outbound route for destinations outside the tenants, e.g.
    #: "sip:trunk.example.com:5060;transport=udp". Empty: such calls get 403.
    trunk: str | None = None
    #: Name servers (IP addresses) for RFC 3263 lookups of host names in the trunk and in
    #: Request-URIs; empty: the system's (/etc/resolv.conf).
    dns_servers: tuple[str, ...] = ()
    #: Source addresses (IPs) of the trunk or PBX whose requests need no authentication.
    trusted_hosts: tuple[str, ...] = ()
    #: Messages per second accepted from one IP address (bursts of twice that); the rest
    #: are dropped so that one source cannot starve the others.
    rate_per_ip: float = Field(default=2000.0, gt=0)
    #: Wrong digest responses (and unknown users) accepted from one IP address within
    #: auth_failure_window_s; beyond that, its REGISTERs and calls get 403 until the window
    #: passes. The second limit is per user at one address.
    auth_failures_per_ip: int = Field(default=50, ge=1)
    auth_failures_per_user: int = Field(default=10, ge=1)
    auth_failure_window_s: int = Field(default=300, ge=1, le=86_400)
    #: The UDP socket's receive buffer: datagrams that arrive while the node is busy wait
    #: here; the kernel drops what does not fit (and caps the size at net.core.rmem_max).
    udp_receive_buffer_bytes: int = Field(default=4 * 1024 * 1024, ge=65_536)


class SMTPSettings(_Section):
    #: The mail server for notices (P18); empty: no email, notices are shown in the app.
    host: str | None = None
    port: int = Field(default=587, ge=1, le=65535)
    #: The From address of notices.
    sender: str = "privacy@localhost"
    username: str | None = None
    password: SecretStr | None = None
    #: STARTTLS after connecting (port 587); `tls` instead for implicit TLS (port 465).
    starttls: bool = True
    tls: bool = False
    timeout_s: float = Field(default=10.0, gt=0)


class FilesSettings(_Section):
    #: Where encrypted attachments are kept: `local` files, or `s3`-compatible storage.
    backend: Literal["local", "s3"] = "local"
    #: The local directory. Default: `<data_dir>/blobs`.
    directory: Path | None = None
    #: S3: the endpoint (MinIO, Ceph, Garage, AWS...), the bucket, the region, the keys.
    s3_endpoint_url: str | None = None
    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    #: S3 multipart part size: 5 MiB at least (S3's minimum for all but the last part).
    s3_part_bytes: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024)

    @model_validator(mode="after")
    def _s3_complete(self) -> FilesSettings:
        if self.backend == "s3" and not self.s3_bucket:
            raise ValueError("backend 's3' needs s3_bucket")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("give both s3_access_key_id and s3_secret_access_key, or neither")
        return self


class SMSSettings(_Section):
    #: The SMS gateway that texts verification codes to numbers of record (P21), as
    #: `ringfence.sms` describes; empty: no codes (an operator or an ID document verifies).
    url: HttpUrl | None = None
    #: Sent as `Authorization: Bearer <token>`.
    token: SecretStr | None = None
    #: The sender name or number the gateway shows, where it lets the client choose.
    sender: str = Field(default="ringfence", min_length=1, max_length=16)
    timeout_s: float = Field(default=10.0, gt=0)


_BUNDLE_ID = r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"


class ApnsAppSettings(_Section):
    """One iOS app: its bundle id and how ringfence authenticates to APNs for it.

    Token authentication (a `.p8` key with its key id and team id) is what Apple recommends;
    a TLS client certificate (PEM, with its key) is the older way. Exactly one is given.
    """

    bundle_id: str = Field(pattern=_BUNDLE_ID)
    team_id: str | None = Field(default=None, pattern=r"^[A-Z0-9]{10}$")
    key_id: str | None = Field(default=None, pattern=r"^[A-Z0-9]{10}$")
    key_file: Path | None = None
    cert_file: Path | None = None
    #: The certificate's private key, when it is not in `cert_file`.
    cert_key_file: Path | None = None
    production_url: HttpUrl = HttpUrl("https://api.push.apple.com")
    sandbox_url: HttpUrl = HttpUrl("https://api.sandbox.push.apple.com")
    #: Extra trust anchors (PEM), for a local stand-in's certificate.
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> ApnsAppSettings:
        token = (self.key_file, self.key_id, self.team_id)
        if self.cert_file is None and None in token:
            raise ValueError("give key_file, key_id and team_id (token auth) or cert_file")
        if self.cert_file is not None and self.key_file is not None:
            raise ValueError("give key_file (token auth) or cert_file, not both")
        return self


class FcmAppSettings(_Section):
    """One Firebase project: the service account that may send to its apps."""

    service_account_file: Path
    url: HttpUrl = HttpUrl("https://fcm.googleapis.com")
    #: Replaces the service account's `token_uri` (a local stand-in's token endpoint).
    token_url: HttpUrl | None = None
    ca_file: Path | None = None


class PushSettings(_Section):
    """Push providers (RFC 8599 `pn-provider` apns, fcm, webhook) and their limits."""

    apns: tuple[ApnsAppSettings, ...] = ()
    fcm: tuple[FcmAppSettings, ...] = ()
    #: Webhook (UnifiedPush) endpoints are device-supplied URLs: only https to public
    #: addresses, unless this allows http and private addresses (a lab, the tests).
    webhook_allow_private: bool = False
    #: One request to a provider, connection included.
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    #: Requests in flight per provider; more wait their turn.
    max_in_flight: int = Field(default=100, ge=1, le=10_000)
    #: How long a call waits, ringing, for a device woken by push (then 480).
    call_wait_s: float = Field(default=30.0, ge=1, le=180)


class OverlaySettings(_Section):
    """Overlay mode: devices' accounts kept registered on their tenant's PBX (`upstream`)."""

    #: How long a call from the PBX waits, ringing, for the woken device (then 480 with
    #: X-Sipis-Reason). Acrobits' SIPIS waits 2 minutes.
    call_wait_s: float = Field(default=120.0, ge=1, le=300)
    #: The most REGISTERs per second this node sends to all PBXes together (first ones,
    #: refreshes, retries and challenge answers alike).
    max_register_rate: float = Field(default=50.0, gt=0, le=10_000)
    #: After a restart, every registration is restored at a random point of this window.
    restore_window_s: float = Field(default=60.0, ge=0, le=3600)


class PrivacySettings(_Section):
    #: Days between publishing a policy version and its taking effect, at least (P18).
    min_notice_days: int = Field(default=30, ge=1, le=365)
    #: How long the privacy records are kept (P15), in days: the disclosure register from
    #: each request, legal holds from their release, the destruction record, and
    #: data-subject requests from their closing. Set them to what the law in force asks.
    disclosures_days: int = Field(default=6 * 365, ge=1)
    released_holds_days: int = Field(default=6 * 365, ge=1)
    destructions_days: int = Field(default=6 * 365, ge=1)
    closed_requests_days: int = Field(default=3 * 365, ge=1)


class LoggingSettings(_Section):
    level: str = "INFO"
    #: One JSON object per line (for log shippers); false gives plain text for a terminal.
    json_lines: bool = True

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return upper


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    http: HTTPSettings = HTTPSettings()
    storage: StorageSettings = StorageSettings()
    keys: KeySettings = KeySettings()
    auth: AuthSettings = AuthSettings()
    sip: SIPSettings = SIPSettings()
    smtp: SMTPSettings = SMTPSettings()
    sms: SMSSettings = SMSSettings()
    files: FilesSettings = FilesSettings()
    push: PushSettings = PushSettings()
    overlay: OverlaySettings = OverlaySettings()
    privacy: PrivacySettings = PrivacySettings()
    logging: LoggingSettings = LoggingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init arguments; the environment overrides them.
        return (env_settings, init_settings)

    def kek_path(self) -> Path:
        return self.keys.kek_file or self.storage.data_dir / "kek.key"

    def key_store_url(self) -> str:
        if self.keys.store_url:
            return self.keys.store_url
        return f"sqlite+aiosqlite:///{self.storage.data_dir / 'keys.db'}"


def _unknown_env_keys(environ: dict[str, str]) -> list[str]:
    """Names of `RINGFENCE_*` variables that match no setting."""
    unknown = []
    for name in environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in _ENV_NOT_SETTINGS:
            continue
        path = upper[len(ENV_PREFIX) :].lower().split(ENV_NESTED_DELIMITER)
        model: Any = Settings
        for part in path:
            fields = getattr(model, "model_fields", None)
            if fields is None or part not in fields:
                unknown.append(name)
                break
            model = fields[part].annotation
    return unknown


def _describe(exc: ValidationError, origin: str) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        reason = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        lines.append(f"{origin}: {key}: {reason}")
    return "\n".join(lines)


def load_settings(path: Path | None = None) -> Settings:
    """Read the settings from `path` (if given) and the process environment.

    Raises:
        ConfigError: the file is missing or not TOML, a key is unknown or a value invalid.
    """
    data: dict[str, Any] = {}
    origin = "environment"
    if path is not None:
        origin = f"{path} or environment"
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: no such file") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    unknown = _unknown_env_keys(dict(os.environ))
    if unknown:
        raise ConfigError("\n".join(f"environment: {name}: unknown key" for name in unknown))
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from exc
