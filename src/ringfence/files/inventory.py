"""The personal data the file service keeps (see `ringfence.inventory`)."""

from __future__ import annotations

from ringfence.inventory import Category, Declaration, LegalBasis, Stored

ATTACHMENTS = Category(
    name="attachments",
    holds="files the user sent, encrypted on the device with a key the service never has "
    "(ciphertext only, P9); which accounts they were sent to; their size and times",
    purpose="let the recipients download a file sent to them",
    basis=LegalBasis.CONTRACT,
    retention="until the sender deletes it or every recipient has, at most the sender's "
    "attachments retention (30 days by default); an unfinished upload one day; deleted with "
    "the sender's account",
)

DECLARED: tuple[Declaration, ...] = (
    # The blob itself is in the blob store (local files or S3) under the row's id: the
    # envelope's ciphertext, which nobody without the key in the recipients' message reads.
    Stored(
        ATTACHMENTS,
        "files",
        ("id", "owner_id", "size", "complete", "chunk_exp", "created_at", "expires_at"),
        sealed=False,
    ),
    Stored(ATTACHMENTS, "file_recipients", ("file_id", "account_id"), sealed=False),
)
