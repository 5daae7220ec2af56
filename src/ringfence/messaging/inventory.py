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

MESSAGE_HISTORY = Category(
    name="message history",
    holds="the messages the user sent and received through the service: the other party's "
    "address, content type, text (or a file's link and key), when, and whether it was "
    "delivered or read",
    purpose="show the same conversations on every device of the user",
    basis=LegalBasis.CONTRACT,
    retention="the account's messaging retention (90 days by default); a message the user "
    "deletes at once; deleted with the account",
)

DECLARED: tuple[Declaration, ...] = (
    Stored(MESSAGE_HISTORY, "messages", ("sealed",), sealed=True),
    # The order, the direction, the delivery status and the times, and a keyed hash of the
    # IMDN Message-ID that a notification names: they page, update and expire the row.
    Stored(
        MESSAGE_HISTORY,
        "messages",
        ("seq", "account_id", "direction", "ref_key", "status", "at", "expires_at"),
        sealed=False,
    ),
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
