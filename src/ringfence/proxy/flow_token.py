"""Flow tokens: the two flows of a dialog, carried in our Record-Route (RFC 5626 §5.3).

A proxy that serves phones behind NATs and on connections must send each in-dialog request
over the flow the other party is on. It writes both flows of the dialog (the caller's and the
callee's) into the user part of its Record-Route URI; every in-dialog request then carries
them back in its Route header, and the proxy sends it over the flow it did *not* come from.
The token is authenticated (HMAC-SHA-256, truncated to 128 bits) so that no one can make the
proxy send to an address of their choosing.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json

from ringfence.sip.transaction import Address

_MAC_BYTES = 16


def _pack(address: Address) -> list[str | int | None]:
    return [address.transport, address.host, address.port, address.flow]


def _unpack(data: object) -> Address:
    if not (isinstance(data, list) and len(data) == 4):
        raise ValueError("not an address")
    transport, host, port, flow = data
    if not (isinstance(transport, str) and isinstance(host, str) and isinstance(port, int)):
        raise ValueError("not an address")
    if flow is not None and not isinstance(flow, str):
        raise ValueError("not an address")
    return Address(transport, host, port, flow)


def encode(key: bytes, caller: Address, callee: Address) -> str:
    """A token naming both flows; URL-safe, so it fits a SIP URI user part."""
    payload = json.dumps([_pack(caller), _pack(callee)], separators=(",", ":")).encode()
    mac = hmac.digest(key, payload, "sha256")[:_MAC_BYTES]
    return base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")


def decode(key: bytes, token: str) -> tuple[Address, Address] | None:
    """The two flows of a token we made, or None for anything else."""
    if len(token) > _MAX_CACHED_TOKEN:
        return _decode(key, token)
    return _decode_cached(key, token)


#: Tokens are about 100 characters; every request of a dialog brings its token back.
_MAX_CACHED_TOKEN = 512


def _decode(key: bytes, token: str) -> tuple[Address, Address] | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
    expected = hmac.digest(key, payload, "sha256")[:_MAC_BYTES]
    if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, expected):
        return None
    try:
        caller, callee = json.loads(payload)
        return _unpack(caller), _unpack(callee)
    except (ValueError, TypeError):
        return None


_decode_cached = functools.lru_cache(maxsize=4096)(_decode)


def same_flow(a: Address, b: Address) -> bool:
    """Whether two addresses are the same flow: the connection, or the UDP 5-tuple's far end."""
    if a.flow is not None or b.flow is not None:
        return a.flow == b.flow
    return (a.transport.upper(), a.host, a.port) == (b.transport.upper(), b.host, b.port)
