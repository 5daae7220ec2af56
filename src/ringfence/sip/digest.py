"""HTTP digest authentication as SIP uses it (RFC 3261 §22.4, RFC 7616, RFC 8760).

Accounts keep their credentials only as HA1 = H(username ":" realm ":" password) for each
algorithm (RFC 7616 §3.4.2), never the password itself: HA1 is what a registrar needs to check
a digest response, and a leaked HA1 does not reveal the password used elsewhere.
"""

from __future__ import annotations

import enum
import hashlib


class DigestAlgorithm(enum.StrEnum):
    #: RFC 3261 §22.4; still what most deployed phones send.
    MD5 = "MD5"
    #: RFC 8760 §2.2; preferred when the client offers it.
    SHA256 = "SHA-256"


def _hash(algorithm: DigestAlgorithm, data: str) -> str:
    name = "md5" if algorithm is DigestAlgorithm.MD5 else "sha256"
    # MD5 here is the digest scheme's own hash (RFC 3261 §22.4), not our choice of security.
    return hashlib.new(name, data.encode(), usedforsecurity=False).hexdigest()


def ha1(algorithm: DigestAlgorithm, username: str, realm: str, password: str) -> str:
    """HA1 of RFC 7616 §3.4.2 for the non-session algorithms, as lowercase hex."""
    return _hash(algorithm, f"{username}:{realm}:{password}")
