"""REGISTER requests built by hand, and the RFC 4475 messages a registrar answers."""

from __future__ import annotations

from collections.abc import Iterable

from ringfence.sip.message import Headers, Request
from ringfence.sip.parser import parse_datagram
from tests.support.torture import TORTURE_ROOT

TORTURE = TORTURE_ROOT


def register(
    *contacts: str,
    to: str = "<sip:alice@sip.acme.example>",
    uri: str = "sip:sip.acme.example",
    expires: str | None = None,
    call_id: str = "call-1@phone",
    cseq: int = 1,
    vias: int = 1,
    path: Iterable[str] = (),
    supported: Iterable[str] = (),
    extra: Iterable[tuple[str, str]] = (),
    method: str = "REGISTER",
) -> Request:
    """A REGISTER; with `vias` > 1 it went through `vias - 1` proxies (the top Via first)."""
    items = [
        ("Via", f"SIP/2.0/UDP 192.0.2.{n + 1}:5060;branch=z9hG4bK-hop{n}") for n in range(vias)
    ]
    items += [
        ("Max-Forwards", "70"),
        ("From", f"{to};tag=from-1"),
        ("To", to),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        ("User-Agent", "TestPhone/1.0"),
    ]
    items += [("Contact", contact) for contact in contacts]
    if expires is not None:
        items.append(("Expires", expires))
    if tags := list(supported):
        items.append(("Supported", ", ".join(tags)))
    items += [("Path", value) for value in path]
    items += list(extra)
    items.append(("Content-Length", "0"))
    return Request(method, uri, Headers(items))


def torture(name: str) -> Request:
    """An RFC 4475 message from the shared folder, parsed byte-exact."""
    message = parse_datagram((TORTURE / "rfc4475" / name).read_bytes())
    assert isinstance(message, Request)
    return message
