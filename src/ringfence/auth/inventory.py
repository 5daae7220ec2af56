"""The personal data authentication keeps: sessions (see `ringfence.inventory`)."""

from __future__ import annotations

from ringfence.inventory import Category, Declaration, LegalBasis, NotPersonal, Stored

SESSIONS = Category(
    name="sessions",
    holds="hashes of the app's access and refresh tokens, their expiry, the device",
    purpose="keep the app signed in without its password",
    basis=LegalBasis.CONTRACT,
    retention="until the refresh token expires (swept), a new password, or the account ends",
)

DECLARED: tuple[Declaration, ...] = (
    Stored(
        SESSIONS,
        "sessions",
        (
            "id",
            "account_id",
            "device_id",
            "access_hash",
            "refresh_hash",
            "access_expires_at",
            "refresh_expires_at",
            "created_at",
        ),
        sealed=False,
    ),
    NotPersonal("admin_tokens", "the operator's API tokens (a label and a hash), no customer's"),
)
