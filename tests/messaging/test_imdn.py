"""CPIM (RFC 3862) and IMDN (RFC 5438) as the message history reads them."""

from __future__ import annotations

import pytest

from ringfence.messaging.imdn import (
    Disposition,
    base_type,
    parse_acro_disposition,
    parse_cpim,
    parse_imdn,
)

# RFC 5438 §7.1.1.1-style message: CPIM headers, the content's MIME headers, the content.
CPIM_MESSAGE = (
    b"From: <sip:alice@sip.acme.example>\r\n"
    b"To: <sip:bob@sip.acme.example>\r\n"
    b"NS: imdn <urn:ietf:params:imdn>\r\n"
    b"imdn.Message-ID: 34jk324j\r\n"
    b"DateTime: 2026-12-06T10:00:00Z\r\n"
    b"imdn.Disposition-Notification: positive-delivery, display\r\n"
    b"\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 12\r\n"
    b"\r\n"
    b"Hello, Bob!\n"
)

DELIVERED = b"""<?xml version="1.0" encoding="UTF-8"?>
<imdn xmlns="urn:ietf:params:xml:ns:imdn">
  <message-id>34jk324j</message-id>
  <datetime>2026-12-06T10:00:01Z</datetime>
  <delivery-notification><status><delivered/></status></delivery-notification>
</imdn>"""


def test_cpim_gives_the_imdn_id_the_dispositions_asked_and_the_content() -> None:
    cpim = parse_cpim(CPIM_MESSAGE)
    assert cpim.message_id == "34jk324j"
    assert cpim.notify == ("positive-delivery", "display")
    assert base_type(cpim.content_type) == "text/plain"
    assert cpim.content == b"Hello, Bob!\n"


def test_cpim_with_bare_line_feeds_and_without_imdn_is_read_too() -> None:
    cpim = parse_cpim(b"From: <sip:a@b>\n\nContent-Type: text/plain\n\nhi")
    assert (cpim.message_id, cpim.notify, cpim.content) == (None, (), b"hi")


@pytest.mark.parametrize(
    "body",
    [b"just text", b"From: <sip:a@b>\r\n\r\nno content headers", b"\xff\xfe: x\r\n\r\n\r\n\r\n"],
)
def test_what_is_not_cpim_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match="CPIM"):
        parse_cpim(body)


def test_an_imdn_document_names_the_message_and_its_status() -> None:
    assert parse_imdn(DELIVERED) == Disposition("34jk324j", "delivered")
    displayed = DELIVERED.replace(b"delivery-notification", b"display-notification").replace(
        b"<delivered/>", b"<displayed/>"
    )
    assert parse_imdn(displayed) == Disposition("34jk324j", "displayed")
    failed = DELIVERED.replace(b"<delivered/>", b"<failed/>")
    assert parse_imdn(failed) == Disposition("34jk324j", "failed")


@pytest.mark.parametrize(
    "document",
    [
        b"<imdn/>",
        b"not xml at all",
        DELIVERED.replace(b"urn:ietf:params:xml:ns:imdn", b"urn:example:other"),
        DELIVERED.replace(b"<delivered/>", b""),
        # Entity expansion ("billion laughs") is refused before it starts.
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]>'
        b'<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>&lol;</message-id></imdn>',
        DELIVERED + b" " * 9000,
    ],
)
def test_what_is_not_an_imdn_document_is_refused(document: bytes) -> None:
    with pytest.raises(ValueError, match="IMDN"):
        parse_imdn(document)


def test_acrobits_dispositions() -> None:
    assert parse_acro_disposition(b'{"sms_id": 42, "status": "Displayed"}') == Disposition(
        "42", "displayed"
    )
    for bad in (b"[]", b'{"sms_id": 42, "status": "lost"}', b"{", b'{"status": "delivered"}'):
        with pytest.raises(ValueError, match="disposition"):
            parse_acro_disposition(bad)
