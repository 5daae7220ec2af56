"""The personal data push instances keep (see `ringfence.inventory`)."""

from __future__ import annotations

from ringfence.inventory import Category, Declaration, LegalBasis, Stored

PUSH_INSTANCES = Category(
    name="push instances",
    holds="each device's push tokens, app id, the app's account selector and SIP instance id; "
    "in overlay mode also the SIP account on the provider's PBX (user name, domain, auth user "
    "name, password or HA1)",
    purpose="wake the app by push for the user's calls and messages, and for nothing else; in "
    "overlay mode keep that account registered on the provider's PBX so its calls reach "
    "ringfence (P3: shared with no one)",
    basis=LegalBasis.CONTRACT,
    retention="the account's push instance max age (3 to 6 days) from the app's last report; "
    "erased at once on DELETE, when push is switched off, and with the account",
)

PUSH_TRACES = Category(
    name="push traces",
    holds="for each call that waited for a sleeping device: when it came, the devices pushed "
    "(token fingerprints), what the push services answered, when each device came back, and "
    "how the call ended; never the caller",
    purpose="answer the user's or the provider's question why a call was missed",
    basis=LegalBasis.LEGITIMATE_INTEREST,
    retention="7 days from the call; deleted with the account",
)

DECLARED: tuple[Declaration, ...] = (
    Stored(PUSH_TRACES, "push_traces", ("sealed",), sealed=True),
    Stored(
        PUSH_TRACES, "push_traces", ("id", "account_id", "started_at", "expires_at"), sealed=False
    ),
    Stored(PUSH_INSTANCES, "push_instances", ("sealed",), sealed=True),
    # A keyed hash of the selector (ringfence.crypto.blind) and the instance's times: they
    # find and expire the row, and say nothing without the KEK.
    Stored(
        PUSH_INSTANCES,
        "push_instances",
        ("id", "account_id", "selector_key", "created_at", "updated_at", "expires_at"),
        sealed=False,
    ),
    # Overlay mode: the opened SIP account lives in memory while its registration is kept,
    # and goes with the instance (DELETE, expiry, or another process's erasure within 10 s).
    Stored(
        PUSH_INSTANCES,
        None,
        ("SIP account", "upstream registration state"),
        sealed=False,
        where="the overlay service (transport.overlay), one entry per registered instance",
    ),
)
