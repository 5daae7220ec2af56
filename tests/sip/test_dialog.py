"""Dialogs, RFC 3261 §12: made by either side, requests within them, the peer's requests."""

from __future__ import annotations

import pytest

from ringfence.sip.dialog import Dialog, DialogError, DialogState, dialog_id
from ringfence.sip.message import Headers, Request, Response, make_response

INVITE = Request(
    "INVITE",
    "sip:bob@biloxi.example.com",
    Headers(
        [
            ("Via", "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds"),
            ("Max-Forwards", "70"),
            ("To", "Bob <sip:bob@biloxi.example.com>"),
            ("From", "Alice <sip:alice@atlanta.example.com>;tag=1928301774"),
            ("Call-ID", "a84b4c76e66710@pc33.atlanta.example.com"),
            ("CSeq", "314159 INVITE"),
            ("Contact", "<sip:alice@pc33.atlanta.example.com>"),
            ("Record-Route", "<sip:p1.example.com;lr>"),
            ("Content-Length", "0"),
        ]
    ),
)
RECORD_ROUTE = ("Record-Route", "<sip:p2.example.com;lr>, <sip:p1.example.com;lr>")


def answer(status: int, *, contact: str | None = "<sip:bob@192.0.2.4>") -> Response:
    headers: list[tuple[str, str]] = [RECORD_ROUTE]
    if contact is not None:
        headers.append(("Contact", contact))
    return make_response(INVITE, status, to_tag="a6c85cf", headers=headers)


def test_uac_dialog_from_180_then_200_and_a_bye() -> None:
    early = Dialog.as_uac(INVITE, answer(180))
    assert early.state is DialogState.EARLY
    assert early.id.local_tag == "1928301774"
    assert early.id.remote_tag == "a6c85cf"
    # §12.1.2: the Record-Route of the response, reversed.
    assert early.route_set == ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
    confirmed = early.on_response(answer(200, contact="<sip:bob@192.0.2.9>"))
    assert confirmed.state is DialogState.CONFIRMED
    assert confirmed.remote_target == "sip:bob@192.0.2.9"
    after, bye = confirmed.request("BYE", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKbye")
    assert after.local_seq == 314160
    assert bye.uri == "sip:bob@192.0.2.9"  # loose routing: the remote target
    assert bye.headers.get_all("Route") == list(early.route_set)
    assert bye.headers.get("CSeq") == "314160 BYE"
    assert bye.headers.get("From") == INVITE.headers.get("From")
    assert bye.headers.get("To") == "Bob <sip:bob@biloxi.example.com>;tag=a6c85cf"
    assert bye.headers.get("Call-ID") == INVITE.headers.get("Call-ID")
    assert bye.headers.get("Content-Length") == "0"
    # ACK for the 2xx reuses the INVITE's number (§13.2.2.4).
    _, ack = confirmed.request("ACK", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKack", cseq=314159)
    assert ack.headers.get("CSeq") == "314159 ACK"


def test_strict_routing_puts_the_first_route_in_the_request_uri() -> None:
    response = make_response(
        INVITE,
        200,
        to_tag="t",
        headers=[("Record-Route", "<sip:strict.example.com>"), ("Contact", "<sip:bob@h>")],
    )
    dialog = Dialog.as_uac(INVITE, response)
    _, bye = dialog.request("BYE", "SIP/2.0/UDP a;branch=z9hG4bKs")
    assert bye.uri == "sip:strict.example.com"
    assert bye.headers.get_all("Route") == ["<sip:bob@h>"]


def test_no_route_set_sends_to_the_target_without_route() -> None:
    response = make_response(INVITE, 200, to_tag="t", headers=[("Contact", "<sip:bob@h:5070>")])
    _, info = Dialog.as_uac(INVITE, response).request("INFO", "SIP/2.0/UDP a;branch=z9hG4bKi")
    assert info.uri == "sip:bob@h:5070"
    assert info.headers.get("Route") is None


def test_uas_dialog_checks_the_peers_requests() -> None:
    ours = make_response(INVITE, 200, to_tag="uas-tag", headers=[("Contact", "<sip:bob@h>")])
    dialog = Dialog.as_uas(INVITE, ours)
    # The peer's BYE carries our tag in To: it finds this dialog (§12.2.2).
    bye = Request("BYE", "sip:bob@h", INVITE.headers.replace("To", ours.headers.get("To") or ""))
    assert dialog_id(bye, as_uas=True) == dialog.id
    assert dialog_id(ours, as_uas=False) == Dialog.as_uac(INVITE, ours).id
    assert dialog.route_set == ("<sip:p1.example.com;lr>",)  # §12.1.1: in order
    assert dialog.remote_target == "sip:alice@pc33.atlanta.example.com"
    assert dialog.remote_seq == 314159

    def peer(method: str, cseq: int, contact: str | None = None) -> Request:
        headers = INVITE.headers.replace("CSeq", f"{cseq} {method}").remove("Contact")
        if contact is not None:
            headers = headers.add("Contact", contact)
        return Request(method, "sip:bob@h", headers)

    same, refusal = dialog.receive_request(peer("INFO", 314158))
    assert (same, refusal) == (dialog, 500)  # §12.2.2: out of order
    assert dialog.receive_request(peer("ACK", 314159)) == (dialog, None)
    refreshed, refusal = dialog.receive_request(peer("INVITE", 314160, "<sip:alice@10.0.0.7>"))
    assert refusal is None
    assert refreshed.remote_seq == 314160
    assert refreshed.remote_target == "sip:alice@10.0.0.7"  # target refresh
    info, _ = refreshed.receive_request(peer("INFO", 314161, "<sip:elsewhere@x>"))
    assert info.remote_target == "sip:alice@10.0.0.7"  # INFO refreshes nothing


def test_responses_that_make_no_dialog() -> None:
    with pytest.raises(DialogError, match="creates no dialog"):
        Dialog.as_uac(INVITE, answer(486))
    with pytest.raises(DialogError, match="To tag"):
        Dialog.as_uac(INVITE, make_response(INVITE, 180))
    with pytest.raises(DialogError, match="Contact"):
        Dialog.as_uac(INVITE, answer(200, contact=None))
    early = Dialog.as_uac(INVITE, answer(183, contact=None))  # early: Contact optional
    assert early.remote_target == ""
    no_contact = Request("INVITE", INVITE.uri, INVITE.headers.remove("Contact"))
    with pytest.raises(DialogError, match="Contact"):
        Dialog.as_uas(no_contact, make_response(no_contact, 200, to_tag="x"))
