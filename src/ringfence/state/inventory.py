"""Personal data the live state holds in memory only (see `ringfence.inventory`)."""

from __future__ import annotations

from ringfence.inventory import Category, Declaration, LegalBasis, Stored

REGISTRATIONS = Category(
    name="registrations",
    holds="where each device of the user can be reached: contact addresses, the app's "
    "user agent, the push parameters it registered with",
    purpose="deliver the user's calls and messages to their devices",
    basis=LegalBasis.CONTRACT,
    retention="until the registration expires (at most sip.max_expires_s); a device that "
    "registered with push parameters (RFC 8599) is kept asleep, to be woken by push, until the "
    "account's push instance max age (3 to 6 days, P3); never stored",
)
ABUSE_LIMITS = Category(
    name="abuse limits",
    holds="source IP addresses and user names with counts of failed authentications",
    purpose="stop password guessing (and nothing else)",
    basis=LegalBasis.LEGITIMATE_INTEREST,
    retention="the failure window (sip.auth_failure_window_s, 5 minutes), never stored",
)

DECLARED: tuple[Declaration, ...] = (
    Stored(
        REGISTRATIONS,
        None,
        ("address-of-record", "contacts", "source address", "user agent", "pn-* parameters"),
        sealed=False,
        where="the location service (state.location)",
    ),
    Stored(
        ABUSE_LIMITS,
        None,
        ("source address", "user name", "failure times"),
        sealed=False,
        where="the auth failure guard (state.ratelimit)",
    ),
)
