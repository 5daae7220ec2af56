"""The personal data held messages keep (see `ringfence.inventory`)."""

from __future__ import annotations

from ringfence.inventory import Category, Declaration, LegalBasis, Stored

HELD_MESSAGES = Category(
    name="held messages",
    holds="messages sent to the user while every device of theirs slept: sender, "
    "recipient, content type, text, and when it arrived",
    purpose="deliver the message when one of the user's devices registers",
    basis=LegalBasis.CONTRACT,
    retention="until delivered, at most 7 days; deleted with the account",
)

DECLARED: tuple[Declaration, ...] = (
    Stored(HELD_MESSAGES, "held_messages", ("sealed",), sealed=True),
    # The AOR as a keyed hash (ringfence.crypto.blind) and the times: they find, claim and
    # expire the row, and say nothing without the KEK.
    Stored(
        HELD_MESSAGES,
        "held_messages",
        ("id", "account_id", "aor_key", "received_at", "expires_at", "claimed_until"),
        sealed=False,
    ),
)
