"""RFC 3263 §4: the transport, address and port a SIP URI leads to, from DNS.

1. A numeric host needs no lookup: its transport is the `transport` parameter, else UDP for
   sip: and TLS for sips:; its port the URI's, else 5060 or 5061 (§4.1, §4.2).
2. A host name with a port: A and AAAA records, same transport rule (§4.2).
3. A host name with a transport but no port: SRV for that transport, else A/AAAA (§4.2).
4. Neither: NAPTR (§4.1) to choose the transport, then SRV; without NAPTR records, SRV for
   each transport we support (UDP, TCP, TLS for sip:; TLS for sips:); without SRV, A/AAAA
   with the default transport and port.

SRV targets come in priority order, weighted at random within a priority (RFC 2782). The
answers are cached for their TTL by dnspython's resolver. Failures (no such name, time-out,
no records) give an empty list: the caller answers the request.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.rdata
import dns.resolver
from dns.rdtypes.IN.NAPTR import NAPTR
from dns.rdtypes.IN.SRV import SRV

from ringfence.sip.transaction import Address
from ringfence.sip.uri import SipURI, is_ip_address

logger = logging.getLogger(__name__)

#: NAPTR services we can use (RFC 3263 §4.1; SIPS+D2T is TLS).
_NAPTR_SERVICES = {"SIP+D2U": "UDP", "SIP+D2T": "TCP", "SIPS+D2T": "TLS"}
#: SRV prefixes by transport (§4.1).
_SRV_PREFIX = {"UDP": "_sip._udp", "TCP": "_sip._tcp", "TLS": "_sips._tcp"}


class SipResolver:
    """Resolves SIP URIs per RFC 3263, over the system's or the given name servers."""

    def __init__(
        self, nameservers: Sequence[str] = (), *, port: int = 53, timeout_s: float = 2.0
    ) -> None:
        """Set the resolver up.

        Args:
            nameservers: IP addresses of name servers; empty: /etc/resolv.conf's.
            port: Their port (tests run a server on a free one).
            timeout_s: How long one resolution may take in all.
        """
        resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            resolver.nameservers = list(nameservers)
            resolver.port = port
        resolver.lifetime = timeout_s
        resolver.cache = dns.resolver.LRUCache(10_000)
        self._resolver = resolver

    async def resolve(self, uri: SipURI) -> list[Address]:
        """The next hops `uri` names, in the order to try them; empty if DNS has none."""
        secure = uri.scheme == "sips"
        forced = uri.param("transport")
        transport = forced.upper() if forced else ("TLS" if secure else "UDP")
        default_port = 5061 if transport in ("TLS", "WSS") else 5060
        if is_ip_address(uri.host):
            return [Address(transport, uri.host.strip("[]"), uri.port or default_port)]
        if uri.port is not None:
            return await self._addresses(uri.host, transport, uri.port)
        if forced:
            prefix = _SRV_PREFIX.get(transport, "_sip._tcp")
            srv = await self._srv(f"{prefix}.{uri.host}", transport)
            return srv or await self._addresses(uri.host, transport, default_port)
        for name, naptr_transport in await self._naptr(uri.host, secure):
            found = await self._srv(name, naptr_transport)
            if found:
                return found
        for candidate in ("TLS",) if secure else ("UDP", "TCP", "TLS"):
            found = await self._srv(f"{_SRV_PREFIX[candidate]}.{uri.host}", candidate)
            if found:
                return found
        return await self._addresses(uri.host, transport, default_port)

    async def _query(self, name: str, rdtype: str) -> list[dns.rdata.Rdata]:
        try:
            answer = await self._resolver.resolve(name, rdtype, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers, dns.exception.Timeout):
            return []
        except dns.exception.DNSException as exc:
            logger.debug("DNS %s query failed: %s", rdtype, type(exc).__name__)
            return []
        return list(answer)

    async def _naptr(self, host: str, secure: bool) -> list[tuple[str, str]]:
        records = [r for r in await self._query(host, "NAPTR") if isinstance(r, NAPTR)]
        usable: list[tuple[tuple[int, int], str, str]] = []
        for record in records:
            transport = _NAPTR_SERVICES.get(record.service.decode().upper())
            if transport is None or (secure and transport != "TLS"):
                continue
            if record.flags.decode().lower() != "s":
                continue  # only terminal SRV lookups (§4.1)
            order = (record.order, record.preference)
            usable.append((order, str(record.replacement).rstrip("."), transport))
        return [(name, transport) for _, name, transport in sorted(usable)]

    async def _srv(self, name: str, transport: str) -> list[Address]:
        records = [r for r in await self._query(name, "SRV") if isinstance(r, SRV)]
        hops: list[Address] = []
        for record in _rfc2782_order(records):
            target = str(record.target).rstrip(".")
            if target == "":
                continue  # "." : the service is decidedly not available here
            hops += await self._addresses(target, transport, record.port)
        return hops

    async def _addresses(self, host: str, transport: str, port: int) -> list[Address]:
        found = [str(r) for r in await self._query(host, "A")]
        found += [str(r) for r in await self._query(host, "AAAA")]
        return [Address(transport, address, port) for address in found]


def _rfc2782_order(records: list[SRV]) -> list[SRV]:
    """Lowest priority first; within one, a weighted random order (RFC 2782)."""
    ordered: list[SRV] = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority]
        while group:
            total = sum(r.weight for r in group)
            pick = random.uniform(0, total) if total else 0.0  # noqa: S311 - load spreading
            running = 0
            chosen = group[-1]
            for record in group:
                running += record.weight
                if running >= pick:
                    chosen = record
                    break
            ordered.append(chosen)
            group.remove(chosen)
    return ordered
