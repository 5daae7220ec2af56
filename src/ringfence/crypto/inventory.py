"""The key store (see `ringfence.inventory`): one wrapped data key per subject."""

from __future__ import annotations

from ringfence.inventory import Category, Declaration, LegalBasis, Stored

SUBJECT_KEYS = Category(
    name="subject keys",
    holds="the subject's data key, wrapped by the key-encryption key",
    purpose="encrypt the subject's personal data, so that destroying it erases every copy",
    basis=LegalBasis.CONTRACT,
    retention="while the subject's data exists; destroyed first at erasure (P19)",
)

DECLARED: tuple[Declaration, ...] = (
    Stored(SUBJECT_KEYS, "subject_keys", ("subject", "wrapped"), sealed=False),
)
