"""Personal data the transports hold in memory (see `ringfence.inventory`)."""

from __future__ import annotations

from ringfence.inventory import Category, Declaration, LegalBasis, Stored

CONNECTIONS = Category(
    name="connections",
    holds="source IP addresses with a message rate and a connection count each",
    purpose="keep one source from flooding the others out",
    basis=LegalBasis.LEGITIMATE_INTEREST,
    retention="seconds: a source's bucket is forgotten once idle, never stored",
)

DECLARED: tuple[Declaration, ...] = (
    Stored(
        CONNECTIONS,
        None,
        ("source address", "tokens", "open connections"),
        sealed=False,
        where="the per-source limits (transport.limits) and the flow table",
    ),
)
