"""RFC 3263 resolution against a real DNS server on loopback (dnslib, a zone of our own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ringfence.sip.transaction import Address
from ringfence.sip.uri import SipURI, parse_uri
from ringfence.transport.dns import SipResolver
from tests.support.dns import dns_server
from tests.support.net import free_port

ZONE = """
trunk.example.            60 IN NAPTR 10 50 "s" "SIP+D2T" "" _sip._tcp.trunk.example.
trunk.example.            60 IN NAPTR 20 50 "s" "SIP+D2U" "" _sip._udp.trunk.example.
_sip._tcp.trunk.example.  60 IN SRV 20 10 5080 b.trunk.example.
_sip._tcp.trunk.example.  60 IN SRV 10 60 5070 a.trunk.example.
_sip._udp.trunk.example.  60 IN SRV 10 0 5060 a.trunk.example.
a.trunk.example.          60 IN A 192.0.2.10
b.trunk.example.          60 IN A 192.0.2.11
_sip._udp.srvonly.example. 60 IN SRV 10 0 5062 a.trunk.example.
plain.example.            60 IN A 192.0.2.20
plain.example.            60 IN AAAA 2001:db8::20
_sips._tcp.secure.example. 60 IN SRV 10 0 5061 a.trunk.example.
"""


@pytest.fixture(scope="module")
def resolver() -> Iterator[SipResolver]:
    with dns_server(ZONE) as port:
        yield SipResolver(["127.0.0.1"], port=port, timeout_s=2.0)


def sip(text: str) -> SipURI:
    uri = parse_uri(text)
    assert isinstance(uri, SipURI)
    return uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        # §4.1 NAPTR picks TCP (order 10); its SRV gives both hosts, priority first.
        (
            "sip:trunk.example",
            [Address("TCP", "192.0.2.10", 5070), Address("TCP", "192.0.2.11", 5080)],
        ),
        # A transport parameter skips NAPTR: the SRV of that transport.
        ("sip:trunk.example;transport=udp", [Address("UDP", "192.0.2.10", 5060)]),
        # No NAPTR: the SRV records of each transport we support, UDP first.
        ("sip:srvonly.example", [Address("UDP", "192.0.2.10", 5062)]),
        # No SRV either: A and AAAA, default transport and port.
        (
            "sip:plain.example",
            [Address("UDP", "192.0.2.20", 5060), Address("UDP", "2001:db8::20", 5060)],
        ),
        # §4.2: an explicit port means A/AAAA only.
        (
            "sip:plain.example:5099;transport=tcp",
            [Address("TCP", "192.0.2.20", 5099), Address("TCP", "2001:db8::20", 5099)],
        ),
        ("sips:secure.example", [Address("TLS", "192.0.2.10", 5061)]),
        # Numeric hosts need no DNS.
        ("sip:192.0.2.5:5062;transport=tcp", [Address("TCP", "192.0.2.5", 5062)]),
        ("sips:[2001:db8::1]", [Address("TLS", "2001:db8::1", 5061)]),
        # Nothing known: nothing to try (the caller answers the request).
        ("sip:nowhere.example", []),
    ],
)
async def test_rfc3263_resolution(resolver: SipResolver, uri: str, expected: list[Address]) -> None:
    assert await resolver.resolve(sip(uri)) == expected


async def test_an_unreachable_name_server_gives_nothing_quickly() -> None:
    silent = SipResolver(["127.0.0.1"], port=free_port(), timeout_s=0.3)
    assert await silent.resolve(sip("sip:trunk.example")) == []
