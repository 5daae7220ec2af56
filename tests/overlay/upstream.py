"""A PBX registrar played with the project's own digest server, for overlay tests."""

from __future__ import annotations

import random

from ringfence.overlay.registration import UpstreamAccount
from ringfence.sip.digest import DigestAlgorithm, DigestRealms, VerifyStatus, ha1
from ringfence.sip.message import Request, Response, make_response

REALM = "pbx.example"
ACCOUNT = UpstreamAccount(
    aor="sip:201@pbx.example",
    registrar="sip:pbx.example",
    contact="sip:rf-0a1b2c@203.0.113.5:5060;transport=udp",
    auth_username="201",
    password="s3cret-201",
    expires=600,
)
HA1 = {
    algorithm: ha1(algorithm, "201", REALM, "s3cret-201")
    for algorithm in (DigestAlgorithm.MD5, DigestAlgorithm.SHA256)
}


def rng(seed: int) -> random.Random:
    """Reproducible jitter (not secrets)."""
    return random.Random(seed)  # noqa: S311


class Registrar:
    """A registrar that challenges (401), checks the answer, and grants `granted` seconds."""

    def __init__(self, granted: int = 600) -> None:
        self.realms = DigestRealms(b"k" * 32, nonce_lifetime_s=3600)
        self.granted = granted
        self.seen: list[Request] = []
        #: A status to answer everything with instead (403, 503, ...), when set.
        self.answer: int | None = None

    def handle(self, request: Request, now: float) -> Response:
        self.seen.append(request)
        if self.answer is not None:
            return make_response(request, self.answer)
        stale = False
        credentials = self.realms.credentials_for(request.headers.get_all("Authorization"), REALM)
        if credentials is not None:
            result = self.realms.server(REALM).verify(credentials, "REGISTER", HA1, now)
            if result.status is VerifyStatus.OK:
                contact = request.headers.get("Contact")
                return make_response(
                    request,
                    200,
                    headers=(("Contact", f"{contact};expires={self.granted}"),),
                )
            stale = result.status is VerifyStatus.STALE
        challenges = self.realms.challenge_headers(REALM, "WWW-Authenticate", now, stale=stale)
        return make_response(request, 401, headers=challenges)
