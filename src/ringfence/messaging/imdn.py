"""What the message history needs to know of a MESSAGE body: CPIM wrapping and IMDN.

Clients that ask for delivery and read notifications (RFC 5438) wrap the message in CPIM
(RFC 3862, `message/cpim`): a header block with `imdn.Message-ID` and
`imdn.Disposition-Notification`, a blank line, the MIME headers of the content, a blank line,
the content. A notification is itself such a MESSAGE whose content is `message/imdn+xml`,
naming the message it is about and its disposition (delivered, displayed, failed...).

Acrobits apps use their own pair instead: `disposition_notification` on the Send Message web
service, and `application/x-acro-disposition-notification` messages, whose JSON names the
`sms_id` and a `status`.

Nothing here does I/O; every parser refuses what it cannot read with `ValueError`, and the
history then keeps the body as it came.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

CPIM = "message/cpim"
IMDN_XML = "message/imdn+xml"
ACRO_DISPOSITION = "application/x-acro-disposition-notification"
#: RFC 3994: "is typing" indications. They are never kept (P1: nothing beyond the purpose).
IS_COMPOSING = "application/im-iscomposing+xml"

IMDN_NS = "urn:ietf:params:xml:ns:imdn"
#: An IMDN document is a few hundred bytes; anything far larger is not one.
MAX_IMDN_BYTES = 8192

#: RFC 5438 §7.2.1.1 and §7.2.1.2: what a notification may say; the history keeps the
#: furthest a message got.
STATUS_RANK = {"sent": 0, "failed": 1, "delivered": 2, "displayed": 3}

_HEADER = re.compile(r"^([A-Za-z0-9.\-]+):\s*(.*)$")


@dataclass(frozen=True, slots=True)
class Cpim:
    """The parts of a CPIM message (RFC 3862 §3) the history uses.

    Attributes:
        message_id: `imdn.Message-ID` (RFC 5438 §6.3), None when absent.
        notify: The dispositions asked for (`imdn.Disposition-Notification`, lowercased).
        content_type: The content's own Content-Type.
        content: The content.
    """

    message_id: str | None
    notify: tuple[str, ...]
    content_type: str
    content: bytes


def base_type(content_type: str) -> str:
    """`text/plain;charset=utf-8` -> `text/plain`."""
    return content_type.split(";", 1)[0].strip().lower()


def _headers(block: bytes) -> dict[str, str]:
    """Header lines of a CPIM block; the namespace prefix (`imdn.`) kept as given, lowercased."""
    found: dict[str, str] = {}
    for raw in block.decode("utf-8").split("\r\n"):
        line = raw.strip()
        if not line:
            continue
        match = _HEADER.match(line)
        if match is None:
            raise ValueError("a CPIM header line is not `Name: value`")
        found.setdefault(match.group(1).lower(), match.group(2).strip())
    return found


def _split(data: bytes) -> tuple[bytes, bytes]:
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, rest = data.partition(separator)
        if found:
            return head.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), rest
    raise ValueError("a CPIM part has no blank line after its headers")


def parse_cpim(body: bytes) -> Cpim:
    """The message inside a `message/cpim` body.

    Raises:
        ValueError: not CPIM as RFC 3862 §3 lays it out.
    """
    try:
        message_block, rest = _split(body)
        content_block, content = _split(rest)
        message = _headers(message_block)
        mime = _headers(content_block)
    except UnicodeDecodeError as exc:
        raise ValueError("CPIM headers are not UTF-8") from exc
    notify = tuple(
        part.strip().lower()
        for part in message.get("imdn.disposition-notification", "").split(",")
        if part.strip()
    )
    return Cpim(
        message.get("imdn.message-id") or None,
        notify,
        mime.get("content-type", "text/plain"),
        content,
    )


@dataclass(frozen=True, slots=True)
class Disposition:
    """What a notification says: the message it is about, and how far it got."""

    message_id: str
    status: str


def parse_imdn(document: bytes) -> Disposition:
    """The disposition an `message/imdn+xml` document reports (RFC 5438 §7.2).

    Raises:
        ValueError: not such a document, or one too large or with a DTD (entity expansion
            is refused outright by defusedxml rather than trusted to the parser's limits).
    """
    if len(document) > MAX_IMDN_BYTES:
        raise ValueError("not an IMDN document")
    try:
        root = fromstring(document, forbid_dtd=True)
    except (ParseError, DefusedXmlException) as exc:
        raise ValueError("not an IMDN document") from exc
    ns = {"i": IMDN_NS}
    message_id = root.findtext("i:message-id", namespaces=ns)
    if root.tag != f"{{{IMDN_NS}}}imdn" or not message_id:
        raise ValueError("not an IMDN document")
    for kind in ("delivery-notification", "display-notification", "processing-notification"):
        status = root.find(f"i:{kind}/i:status", ns)
        if status is None or not len(status):
            continue
        word = status[0].tag.rpartition("}")[2]
        if word in ("delivered", "displayed"):
            return Disposition(message_id.strip(), word)
        if word in ("failed", "forbidden", "error"):
            return Disposition(message_id.strip(), "failed")
        raise ValueError(f"an IMDN status this history does not track: {word}")
    raise ValueError("an IMDN document without a status")


def parse_acro_disposition(document: bytes) -> Disposition:
    """An Acrobits disposition notification: JSON naming `sms_id` (or `id`) and `status`."""
    try:
        data = json.loads(document)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError("not a disposition notification") from exc
    if not isinstance(data, dict):
        raise ValueError("not a disposition notification")
    target = data.get("sms_id", data.get("id"))
    status = str(data.get("status", "")).lower()
    if not isinstance(target, (str, int)) or status not in STATUS_RANK:
        raise ValueError("not a disposition notification")
    return Disposition(str(target), status)
