"""The promises of the privacy policy (DESIGN.md, "The privacy policy as an executable spec").

Each promise has a mechanism in code and tests that carry its id
(`@pytest.mark.promise("P3")`); `ringfence privacy report` lists them side by side.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Promise:
    id: str
    promise: str
    mechanism: str


PROMISES: tuple[Promise, ...] = (
    Promise(
        "P1",
        "a feature processes personal data only when the account's configuration enables it",
        (
            "feature switches in provisioning gate every endpoint and SIP handler; a disabled "
            "feature stores nothing"
        ),
    ),
    Promise(
        "P2",
        "push: SIP account details reach the push server only over HTTPS",
        "instance API is TLS-only outside loopback development",
    ),
    Promise(
        "P3",
        (
            "push data is shared with no one and erased as soon as the instance expires (3-6 "
            "days, by configuration) or push is disabled"
        ),
        (
            "instance TTL from the account; sweeper; DELETE erases at once; credentials encrypted"
            " with the instance's own key, destroyed on erase"
        ),
    ),
    Promise(
        "P4",
        "with another background mode configured, nothing is sent to the push server",
        "account push mode gates the instance API",
    ),
    Promise(
        "P5",
        "BLF: a favourite's URI travels in SIP traffic but is stored nowhere",
        (
            "subscriptions live in ephemeral state only; the user's own favourites stay on the "
            "device (a provider-wide QuickDial list may be provisioned); logs redact them"
        ),
    ),
    Promise(
        "P6",
        (
            "Smart Contacts: contacts are uploaded securely, only to recognise users of the same "
            "provider"
        ),
        "OPRF discovery scoped to the tenant; rate limits; nothing stored",
    ),
    Promise(
        "P7",
        "contacts, location and files are used only for the purpose they were given for",
        "each purpose's data is reachable only from its own service",
    ),
    Promise(
        "P8",
        (
            "location only where required for emergency calls, or when the account sends it at "
            "registration"
        ),
        (
            "per-country policy table; location used on emergency calls; registration location "
            "expires with the registration"
        ),
    ),
    Promise(
        "P9",
        "attachments are always encrypted, uploaded for the recipient to download later",
        "server accepts only its envelope format, stores ciphertext, expires blobs",
    ),
    Promise(
        "P10",
        "avatars and other local-only files never leave the device",
        "no endpoint accepts them",
    ),
    Promise(
        "P11",
        "calendar and contacts sync moves only the listed fields",
        "field-level mapping; anything else is dropped",
    ),
    Promise(
        "P12",
        "booking emails are sent only with the user's consent each time",
        "each email is a draft approved for its exact content; a change voids the approval",
    ),
    Promise(
        "P13",
        "analytics are aggregate and identify no one",
        (
            "only counters without identifiers are accepted; small counts suppressed; crash "
            "reports scrubbed"
        ),
    ),
    Promise(
        "P14",
        "debug logs are taken only when the user agrees, for troubleshooting",
        "log request → user consent → encrypted upload → redaction of secrets → expiry",
    ),
    Promise(
        "P15",
        (
            "data is kept while a customer, then only as long as legal or tax duties need, unless"
            " a request or court order is pending"
        ),
        "retention rules per data category; legal hold; sweeper",
    ),
    Promise(
        "P16",
        "data is encrypted in transit and at rest",
        "TLS for SIP and HTTPS; per-subject envelope encryption",
    ),
    Promise(
        "P17",
        "no sharing or selling; disclosure only under legal process",
        "disclosure register: request, legal basis, what was given, when",
    ),
    Promise(
        "P18",
        "users are told of a merger or a policy change before it takes effect",
        "policy versions with effective dates; notices by email or in-app; acknowledgements",
    ),
    Promise(
        "P19",
        (
            "a user can confirm processing, get access (encrypted data in encrypted form), "
            "correct, and erase (irreversibly)"
        ),
        (
            "data-subject requests with an export bundle, rectification and erasure by key "
            "destruction"
        ),
    ),
    Promise(
        "P20",
        "a user can arrange what happens to their data on death",
        "post-mortem directive, executed on a verified notice",
    ),
    Promise(
        "P21",
        "identity is verified before a request is carried out; answers within 30 days",
        (
            "verification (logged-in session, call-back to the number of record, ID document as "
            "last resort, deleted after the decision); due dates and overdue alerts"
        ),
    ),
)

BY_ID = {promise.id: promise for promise in PROMISES}
