"""The Contact ringfence registers on the PBX for a device, and how it is recognised (sans-IO).

The PBX sends the device's calls and messages to the Contact of the upstream registration
(RFC 3261 §10.2.1: the Contact is where requests for the address-of-record go). Its user
part names the push instance and proves that ringfence made it:

    rfo-<instance id, 32 hex>-<HMAC-SHA-256 of it, 20 hex>

so any SIP worker recognises a request for an instance without shared state, and a request
that names an instance it was not given (a guess, an old Contact of an erased instance)
finds nothing. The MAC key is derived from the key-encryption key: it survives restarts,
so a restored registration keeps its Contact and replaces its own binding on the PBX.
"""

from __future__ import annotations

import hmac
import re
import uuid
from hashlib import sha256

PREFIX = "rfo-"
_MAC_HEX = 20
_USER_RE = re.compile(r"^rfo-([0-9a-f]{32})-([0-9a-f]{20})$")


class ContactTokens:
    """Makes and checks the Contact user parts of upstream registrations."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the contact secret must be 16 bytes or more")
        self._secret = secret

    def _mac(self, instance_hex: str) -> str:
        return hmac.new(self._secret, instance_hex.encode(), sha256).hexdigest()[:_MAC_HEX]

    def user_of(self, instance_id: str) -> str:
        """The Contact user part of an instance's registration."""
        instance_hex = uuid.UUID(instance_id).hex
        return f"{PREFIX}{instance_hex}-{self._mac(instance_hex)}"

    def instance_of(self, user: str) -> str | None:
        """The instance a Request-URI user part names, or None (not ours, or forged)."""
        if not user.startswith(PREFIX):
            return None
        found = _USER_RE.fullmatch(user)
        if found is None:
            return None
        instance_hex, mac = found.groups()
        if not hmac.compare_digest(mac, self._mac(instance_hex)):
            return None
        return str(uuid.UUID(instance_hex))
