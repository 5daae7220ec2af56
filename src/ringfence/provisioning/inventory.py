"""The personal data provisioning keeps: accounts and their devices (see `ringfence.inventory`)."""

from __future__ import annotations

from ringfence.inventory import Category, Declaration, LegalBasis, NotPersonal, Stored

ACCOUNT_IDENTITY = Category(
    name="account identity",
    holds="the SIP user name, the display name, the phone number and the email address of "
    "the account",
    purpose="route calls and messages to the user and show the caller's name",
    basis=LegalBasis.CONTRACT,
    retention="while the account exists; deleted with it",
)
SIP_CREDENTIALS = Category(
    name="SIP credentials",
    holds="digest HA1 values derived from the SIP password (never the password)",
    purpose="authenticate the account's registrations and calls",
    basis=LegalBasis.CONTRACT,
    retention="while the account exists; a new password replaces them",
)
ACCOUNT_SETTINGS = Category(
    name="account settings",
    holds="the account's status, its feature switches and when it was created and changed",
    purpose="provide the features the account's configuration enables (P1)",
    basis=LegalBasis.CONTRACT,
    retention="while the account exists; deleted with it",
)
DEVICES = Category(
    name="devices",
    holds="each signed-in app installation: a keyed hash of its install id, its platform, "
    "app id, and when it was first and last seen",
    purpose="sign the app in and keep each device's sessions apart",
    basis=LegalBasis.CONTRACT,
    retention="while the account exists; deleted with it",
)

#: What erasing an account destroys here (with its sessions and its key).
ERASED_WITH_ACCOUNT = (ACCOUNT_IDENTITY, SIP_CREDENTIALS, ACCOUNT_SETTINGS, DEVICES)

DECLARED: tuple[Declaration, ...] = (
    Stored(
        ACCOUNT_IDENTITY,
        "accounts",
        ("username_sealed", "display_name_sealed", "e164_sealed", "email_sealed"),
        sealed=True,
    ),
    # A keyed hash of the user name (ringfence.crypto.blind): finds the row, reveals nothing
    # without the KEK.
    Stored(ACCOUNT_IDENTITY, "accounts", ("username_key",), sealed=False),
    Stored(SIP_CREDENTIALS, "accounts", ("ha1_md5_sealed", "ha1_sha256_sealed"), sealed=True),
    Stored(
        ACCOUNT_SETTINGS,
        "accounts",
        ("id", "tenant_id", "status", "overrides", "created_at", "updated_at"),
        sealed=False,
    ),
    Stored(
        DEVICES,
        "devices",
        ("id", "account_id", "install_key", "platform", "app_id", "created_at", "last_seen_at"),
        sealed=False,
    ),
    NotPersonal("tenants", "the providers (companies): name, SIP domain, default configuration"),
)
