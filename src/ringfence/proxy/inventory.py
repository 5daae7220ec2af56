"""Personal data the proxy holds in memory while calls go on (see `ringfence.inventory`)."""

from __future__ import annotations

from ringfence.inventory import Category, Declaration, LegalBasis, Stored

SIGNALLING = Category(
    name="signalling in transit",
    holds="the SIP messages of calls and messages under way: addresses, numbers, names",
    purpose="complete the request (RFC 3261 transactions and dialogs)",
    basis=LegalBasis.CONTRACT,
    retention="the transaction (32 s after its end at most) or the dialog; never stored",
)

DECLARED: tuple[Declaration, ...] = (
    Stored(
        SIGNALLING,
        None,
        ("SIP messages", "dialog routes"),
        sealed=False,
        where="the proxy engine's transactions and dialogs (proxy.engine, sip.transaction)",
    ),
)
