"""The schema of both databases, as SQLAlchemy Core tables. Alembic migrations mirror it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("code", String(63), nullable=False, unique=True),
    Column("name", String(128), nullable=False),
    Column("sip_domain", String(253), nullable=False, unique=True),
    Column("defaults", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    #: Overlay mode: the tenant's PBX (provisioning.models.UpstreamPbx); NULL: standalone.
    Column("upstream", JSON, nullable=True),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(36), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    # The SIP user part, sealed like everything personal; routing finds the row by its
    # blind index (ringfence.crypto.blind), 64 hex digits.
    Column("username_key", String(64), nullable=False),
    Column("username_sealed", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("display_name_sealed", LargeBinary, nullable=True),
    Column("e164_sealed", LargeBinary, nullable=True),
    Column("email_sealed", LargeBinary, nullable=True),
    Column("ha1_md5_sealed", LargeBinary, nullable=False),
    Column("ha1_sha256_sealed", LargeBinary, nullable=False),
    Column("overrides", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "username_key"),
)

devices = Table(
    "devices",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    # A keyed hash of the app's install id (ringfence.crypto.blind): it recognises the
    # installation when it signs in again and says nothing more.
    Column("install_key", String(64), nullable=False),
    Column("platform", String(16), nullable=False),
    Column("app_id", String(255), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    UniqueConstraint("account_id", "install_key"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("device_id", String(36), ForeignKey("devices.id", ondelete="CASCADE"), nullable=True),
    Column("access_hash", String(64), nullable=False, unique=True),
    Column("refresh_hash", String(64), nullable=False, unique=True),
    Column("access_expires_at", UTCDateTime, nullable=False),
    Column("refresh_expires_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "account_id"),
)

admin_tokens = Table(
    "admin_tokens",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
)

#: The disclosure register (privacy.disclosures, P17). `subject` is an account id with no
#: foreign key: an entry outlives the account's erasure.
disclosures = Table(
    "disclosures",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("received_at", UTCDateTime, nullable=False),
    Column("authority", String(200), nullable=False),
    Column("reference", String(200), nullable=False),
    Column("legal_basis", Text, nullable=False),
    Column("requested", Text, nullable=False),
    Column("subject", String(36), nullable=True),
    Column("status", String(16), nullable=False),
    Column("given", Text, nullable=True),
    Column("decided_by", String(200), nullable=True),
    Column("decided_at", UTCDateTime, nullable=True),
)

#: Legal holds (privacy.erasure, P15): kept after release; `subject` is an account id.
legal_holds = Table(
    "legal_holds",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(36), nullable=False),
    Column("subject", String(36), nullable=False),
    Column("reason", Text, nullable=False),
    Column("reference", String(200), nullable=False),
    Column("placed_by", String(200), nullable=False),
    Column("placed_at", UTCDateTime, nullable=False),
    Column("released_by", String(200), nullable=True),
    Column("released_at", UTCDateTime, nullable=True),
    Index(None, "subject"),
    Index(None, "tenant_id"),
)

#: What was destroyed, when and why, without the data (privacy.erasure).
destructions = Table(
    "destructions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("subject", String(36), nullable=False),
    Column("categories", JSON, nullable=False),
    Column("reason", String(200), nullable=False),
)

#: Data-subject requests (privacy.requests, P19, P21); `subject` is an account id.
subject_requests = Table(
    "subject_requests",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("subject", String(36), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("verified_by", String(32), nullable=True),
    Column("verified_at", UTCDateTime, nullable=True),
    Column("closed_at", UTCDateTime, nullable=True),
    Column("outcome", Text, nullable=True),
    Index(None, "subject"),
)

#: Post-mortem directives (privacy.postmortem, P20): deleted with their account.
postmortem_directives = Table(
    "postmortem_directives",
    metadata,
    Column(
        "subject",
        String(36),
        ForeignKey("accounts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("action", String(16), nullable=False),
    Column("trustee_sealed", LargeBinary, nullable=True),
    Column("set_at", UTCDateTime, nullable=False),
)

#: Published versions of the privacy policy (privacy.policy, P18).
policy_versions = Table(
    "policy_versions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("version", String(200), nullable=False, unique=True),
    Column("summary", Text, nullable=False),
    Column("url", String(200), nullable=True),
    Column("published_at", UTCDateTime, nullable=False),
    Column("effective_at", UTCDateTime, nullable=False),
)

#: Who was told of which version, how, and when they confirmed; deleted with the account.
policy_notices = Table(
    "policy_notices",
    metadata,
    Column(
        "version_id",
        String(36),
        ForeignKey("policy_versions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("subject", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("channel", String(16), nullable=False),
    Column("sent_at", UTCDateTime, nullable=False),
    Column("acknowledged_at", UTCDateTime, nullable=True),
    Index(None, "subject"),
)

#: ID documents of requests waiting for verification (privacy.requests, P21): sealed with a
#: key of their own; row and key go at the operator's decision.
identity_documents = Table(
    "identity_documents",
    metadata,
    Column(
        "request_id",
        String(36),
        ForeignKey("subject_requests.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("media_type", String(64), nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
)

#: Codes texted to numbers of record (privacy.verification, P21): a keyed hash only. No
#: foreign key: the code goes out before its request is recorded (a refused text records
#: nothing).
verification_codes = Table(
    "verification_codes",
    metadata,
    Column("request_id", String(36), primary_key=True),
    Column("code_hash", String(64), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("sends", Integer, nullable=False),
)

#: Push instances (pushgw.instances, P3): the report sealed with the instance's own key.
push_instances = Table(
    "push_instances",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("selector_key", String(64), nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    UniqueConstraint("account_id", "selector_key"),
    Index(None, "expires_at"),
)

#: Messages held for sleeping devices (messaging.held): sealed with the account's key.
held_messages = Table(
    "held_messages",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("aor_key", String(64), nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("claimed_until", UTCDateTime, nullable=True),
    Index(None, "aor_key"),
    Index(None, "account_id"),
    Index(None, "expires_at"),
)

#: Per-call push traces (pushgw.traces): sealed with the account's key, kept 7 days.
push_traces = Table(
    "push_traces",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Index(None, "account_id", "started_at"),
    Index(None, "expires_at"),
)

#: Each account's message history (messaging.history): sealed with the account's key. `seq`
#: is the cursor devices fetch after: never reused (SQLite AUTOINCREMENT), 64-bit elsewhere.
messages = Table(
    "messages",
    metadata,
    Column(
        "seq",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("account_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("direction", String(3), nullable=False),
    Column("ref_key", String(64), nullable=True),
    Column("status", String(16), nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index(None, "account_id", "seq"),
    Index(None, "account_id", "ref_key"),
    Index(None, "expires_at"),
    sqlite_autoincrement=True,
)

#: Encrypted attachments (files.service): the blob is kept by `ringfence.blobs` under `id`;
#: the service never has its key. Recipients may download it, until they delete it.
files = Table(
    "files",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", String(36), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("complete", Boolean, nullable=False),
    Column("chunk_exp", Integer, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index(None, "owner_id"),
    Index(None, "expires_at"),
)

file_recipients = Table(
    "file_recipients",
    metadata,
    Column("file_id", String(32), ForeignKey("files.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "account_id",
        String(36),
        ForeignKey("accounts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Index(None, "account_id"),
)

#: The key store: a database of its own (see the package docstring).
keys_metadata = MetaData(naming_convention=NAMING)

subject_keys = Table(
    "subject_keys",
    keys_metadata,
    Column("subject", String(128), primary_key=True),
    Column("wrapped", LargeBinary, nullable=False),
)
