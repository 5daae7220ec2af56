"""How a service declares the personal data it keeps (the data inventory of issue #7, P15).

Every service that stores anything declares it here, in code, beside the code that stores
it: which category of personal data, for what purpose, on what legal basis, for how long,
and where (a table and its columns, or process memory). `ringfence privacy inventory` prints
the declarations of all services, and a test fails when a table of either database is not
declared, or a declaration names a table or column that does not exist. A table without
personal data is declared too (`NotPersonal`), with the reason: so that adding a table forces
the question.

The legal bases are those of GDPR Article 6(1); retention is in days after the account is
closed, 0 meaning "deleted with the account" (P15: kept while a customer, then only as long
as a legal or tax duty needs).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class LegalBasis(enum.StrEnum):
    #: Art. 6(1)(b): needed to provide the service the customer signed up for.
    CONTRACT = "contract"
    #: Art. 6(1)(c): a legal duty (tax records, emergency-call rules, court orders).
    LEGAL_OBLIGATION = "legal obligation"
    #: Art. 6(1)(f): the service's security (abuse limits), balanced against the user's rights.
    LEGITIMATE_INTEREST = "legitimate interest"
    #: Art. 6(1)(a): the user's consent, given for this purpose and revocable.
    CONSENT = "consent"


@dataclass(frozen=True, slots=True)
class Category:
    """A category of personal data.

    Attributes:
        name: Short and stable (``account identity``); what an export bundle is keyed by.
        holds: What it is, in a user's words.
        purpose: What it is used for, and only that (P7).
        basis: Why the processing is lawful.
        retention: How long, in words a user understands.
        kept_after_closure_days: Days it outlives the account's closure for a legal duty;
            0: deleted with the account.
    """

    name: str
    holds: str
    purpose: str
    basis: LegalBasis
    retention: str
    kept_after_closure_days: int = 0


@dataclass(frozen=True, slots=True)
class Stored:
    """Where a category lives: a table's columns, or process memory (``table`` None).

    Attributes:
        category: What is kept.
        table: The table, in the main database or the key store; None for memory.
        columns: The table's columns that hold it (in memory: the fields, in words).
        sealed: Encrypted with the subject's own key (P16), so erasure by key destruction
            reaches every copy.
        where: For memory: which component holds it.
    """

    category: Category
    table: str | None
    columns: tuple[str, ...]
    sealed: bool
    where: str = ""


@dataclass(frozen=True, slots=True)
class NotPersonal:
    """A table that holds no personal data, and why not."""

    table: str
    reason: str


Declaration = Stored | NotPersonal
