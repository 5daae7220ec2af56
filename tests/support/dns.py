"""A real DNS server on loopback for tests: dnslib serving a zone of the test's own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dnslib import RCODE
from dnslib.server import DNSLogger, DNSServer
from dnslib.zoneresolver import ZoneResolver

from tests.support.net import free_port

QUIET = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)


class Zone(ZoneResolver):  # type: ignore[misc]
    """dnslib's zone server, answering NODATA (not NXDOMAIN) for a name it has.

    NXDOMAIN means the name has no records of any type, and resolvers cache it so: after a
    NAPTR query answered NXDOMAIN, an A query for the same name would not be asked.
    """

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = super().resolve(request, handler)
        name = request.q.qname
        if not reply.rr and any(name == known for known, _, _ in self.zone):
            reply.header.rcode = RCODE.NOERROR
        return reply


@contextmanager
def dns_server(zone: str) -> Iterator[int]:
    """Serve `zone` (master file text) on 127.0.0.1; yield the UDP port."""
    port = free_port()
    server = DNSServer(Zone(zone), port=port, address="127.0.0.1", logger=QUIET)
    server.start_thread()
    try:
        yield port
    finally:
        server.stop()
        server.server.server_close()
