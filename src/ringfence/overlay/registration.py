"""One device's registration on the upstream PBX, kept by ringfence on its behalf (sans-IO).

In overlay mode the app hands ringfence its SIP account when it goes to sleep; ringfence
registers that account on the provider's PBX with a Contact of its own, so that the PBX sends
the device's calls and messages here (and ringfence wakes the device by push). This module is
the client side of that registration, as RFC 3261 §10.2 lays it out, with no I/O and no clock:

- `start` gives the first REGISTER; `on_response` takes each final response and gives the
  REGISTER to send next, if one is needed now: the same request with credentials after a
  401/407 (RFC 3261 §22.2, client digest from `sip.digest.answer`), one with the interval the
  registrar asks for after a 423 (§10.2.8);
- a 2xx schedules the refresh before the binding lapses: at a random point between 50% and
  80% of the granted time (RFC 5626 §4.4.1 spreads refreshes so that no registrar sees them
  all at once), and never later than 5 s before the end;
- a failure (another 4xx, 5xx, 6xx, a timeout) schedules a retry with the backoff of RFC 5626
  §4.5: min(max_backoff, base * 2^failures), times a random factor in [0.5, 1];
- credentials refused (403, or a fresh challenge in answer to our answer that does not say
  `stale=true`, RFC 7616 §3.3) are retried no sooner than `REFUSED_WAIT_S` and never answered
  twice in one attempt: every refusal is a failed login in the PBX's log, and a guard such as
  fail2ban bans the source after a handful, which would be ringfence's address and so every
  user's. `refused` says so, for the caller to tell the app once;
- after `GIVE_UP_S` (12 hours) without a successful registration the registration ends: the
  caller tells the app, which must hand its account again.

Every REGISTER of one registration shares its Call-ID, and its CSeq grows (§10.2.4: a
registrar orders refreshes by them).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field, replace

from ringfence.sip.digest import (
    Challenge,
    DigestAlgorithm,
    DigestError,
    answer,
    choose_challenge,
    new_cnonce,
    parse_challenge,
)
from ringfence.sip.message import Headers, Request, Response
from ringfence.sip.randomness import random_hex

#: How long a registration may fail before it is given up (the app is told).
GIVE_UP_S = 12 * 3600.0
#: RFC 5626 §4.5: the base time when every attempt failed, and the most a wait grows to.
BACKOFF_BASE_S = 30.0
BACKOFF_MAX_S = 1800.0
#: How early at the latest a refresh goes before the binding lapses.
REFRESH_MARGIN_S = 5.0
#: Challenges answered in a row before a registration counts as failed: the registrar's
#: first, and one it marks stale (RFC 7616 §3.3) while our answer was in flight.
MAX_CHALLENGES = 2
#: The shortest wait after the PBX refused the credentials: at most one failed login per
#: account in fail2ban's default window (10 minutes).
REFUSED_WAIT_S = 900.0


class State(enum.Enum):
    REGISTERING = "registering"
    REGISTERED = "registered"
    BACKING_OFF = "backing off"
    #: Given up after GIVE_UP_S of failures, or unregistered: nothing more is sent.
    ENDED = "ended"


@dataclass(frozen=True)
class UpstreamAccount:
    """The SIP account a device handed over, and where to register it.

    Attributes:
        aor: The address-of-record on the PBX, `sip:user@domain`.
        registrar: The Request-URI of REGISTER, `sip:domain` (§10.2: the domain's
            registrar), or the PBX's address.
        contact: The Contact ringfence registers for the device: a URI that reaches
            ringfence and names the instance.
        auth_username: The user name of the digest credentials (often the AOR's user).
        password: The password; or
        ha1: its precomputed MD5 HA1 for the PBX's realm (never both needed).
        expires: The registration interval asked for, in seconds.
    """

    aor: str
    registrar: str
    contact: str
    auth_username: str
    password: str | None = field(default=None, repr=False)
    ha1: str | None = field(default=None, repr=False)
    expires: int = 3600

    def __post_init__(self) -> None:
        if self.password is None and self.ha1 is None:
            raise ValueError("an upstream account needs a password or an HA1")


class UpstreamRegistration:
    """The registration of one account on the PBX (see the module docstring)."""

    def __init__(self, account: UpstreamAccount, rng: random.Random | None = None) -> None:
        self.account = account
        self.state = State.REGISTERING
        #: When the next REGISTER is due (refresh or retry), on the caller's clock.
        self.due_at: float | None = None
        #: When the binding lapses on the PBX (None: not registered).
        self.expires_at: float | None = None
        self._rng = rng or random.SystemRandom()
        self._call_id = random_hex(16)
        self._tag = random_hex(8)
        self._cseq = 0
        self._expires = account.expires
        self._failing_since: float | None = None
        self._failures = 0
        self._challenges = 0
        # The challenge last answered, and the header that carries its answer.
        self._challenge: tuple[Challenge, str] | None = None
        self._nc = 0
        self._unregistering = False
        # Whether the last REGISTER answered a challenge of this same attempt (not the
        # previous one's credentials offered again, whose nonce may simply have aged).
        self._answered_fresh = False
        #: The PBX refused the credentials on the last attempt (see the module docstring).
        self.refused = False
        #: The PBX took these credentials once (a 2xx): they can remove the binding.
        self.accepted = False

    @property
    def expires(self) -> int:
        """The registration interval asked for in the next REGISTER."""
        return self._expires

    @expires.setter
    def expires(self, seconds: int) -> None:
        # The tenant's setting changed: the next refresh asks for it (§10.2.1.1).
        self.account = replace(self.account, expires=seconds)
        self._expires = seconds

    @property
    def call_id(self) -> str:
        """The Call-ID of every REGISTER of this registration (and of their responses)."""
        return self._call_id

    # -- requests ------------------------------------------------------------------------

    def _register(self, expires: int, authorization: tuple[str, str] | None = None) -> Request:
        self._cseq += 1
        self._answered_fresh = False
        account = self.account
        items = [
            ("Max-Forwards", "70"),
            ("From", f"<{account.aor}>;tag={self._tag}"),
            ("To", f"<{account.aor}>"),
            ("Call-ID", self._call_id),
            ("CSeq", f"{self._cseq} REGISTER"),
            ("Contact", f"<{account.contact}>"),
            ("Expires", str(expires)),
        ]
        if authorization is not None:
            items.append(authorization)
        items.append(("Content-Length", "0"))
        return Request("REGISTER", account.registrar, Headers(items))

    def start(self, now: float) -> Request:
        """The first REGISTER."""
        self._failing_since = now
        self.state = State.REGISTERING
        return self._register(self._expires)

    def due(self, now: float) -> Request | None:
        """The REGISTER to send now, if one is due (refresh or retry)."""
        if self.state is State.ENDED or self.due_at is None or now < self.due_at:
            return None
        self.due_at = None
        if self.state is State.BACKING_OFF:
            self.state = State.REGISTERING
        self._challenges = 0
        # The last credentials are offered again: a registrar that still knows the nonce
        # takes them without a new challenge (nc counts up, RFC 7616 §3.4).
        return self._register(self._expires, self._reanswer())

    def unregister(self) -> Request:
        """A REGISTER that removes the binding (Expires: 0).

        Only an answer to a challenge may follow it (`on_response`): the nonce of the last
        one is likely stale by now (a PBX keeps nonces seconds to minutes).
        """
        self.state = State.ENDED
        self.due_at = None
        self.expires_at = None
        self._expires = 0
        self._unregistering = True
        self._challenges = 0
        return self._register(0, self._reanswer())

    # -- responses -----------------------------------------------------------------------

    def on_response(self, response: Response, now: float) -> Request | None:
        """Take the final response to the last REGISTER; the REGISTER to send now, if any."""
        status = response.status
        if self.state is State.ENDED:
            if self._unregistering and status in (401, 407) and self._challenges < 1:
                return self._answer(response, status)
            return None
        if status in (401, 407):
            if self._answered_fresh and not _stale(response, status):
                self._failed(now, refused=True)  # our answer to its own nonce was wrong
                return None
            if self._challenges < MAX_CHALLENGES:
                retry = self._answer(response, status)
                if retry is not None:
                    return retry
        elif status == 403:
            self._failed(now, refused=True)
            return None
        elif status == 423:
            # §10.2.8: the interval was too short; Min-Expires says what the registrar takes.
            wanted = response.headers.get("Min-Expires") or ""
            if wanted.isdigit() and int(wanted) > self._expires and int(wanted) <= 86_400:
                self._expires = int(wanted)
                return self._register(self._expires, self._reanswer())
        elif 200 <= status < 300:
            granted = _granted(response, self.account.contact, self._expires)
            if granted > 0:  # 0: the PBX kept no binding of ours (§10.3 step 8)
                self._registered(granted, now)
                return None
        self._failed(now)
        return None

    def timed_out(self, now: float) -> None:
        """No final response came (Timer F, §17.1.2.2): a failure, retried later."""
        if self.state is not State.ENDED:
            self._failed(now)

    def _answer(self, response: Response, status: int) -> Request | None:
        header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        try:
            offered = [parse_challenge(value) for value in response.headers.get_all(header)]
            if self.account.password is None:
                # An MD5 HA1 answers MD5 challenges only (RFC 8760 §2.3: a SHA-256 one
                # would need the password).
                offered = [c for c in offered if c.digest_algorithm is DigestAlgorithm.MD5]
            challenge = choose_challenge(offered)
        except DigestError:
            return None
        self._challenges += 1
        self._challenge = (challenge, "Authorization" if status == 401 else "Proxy-Authorization")
        self._nc = 0
        request = self._register(self._expires, self._reanswer())
        self._answered_fresh = True
        return request

    def _reanswer(self) -> tuple[str, str] | None:
        """Credentials for the challenge last answered, with the next nonce-count."""
        if self._challenge is None:
            return None
        challenge, name = self._challenge
        self._nc += 1
        account = self.account
        credentials = answer(
            challenge,
            "REGISTER",
            account.registrar,
            account.auth_username,
            account.password,
            ha1_hex=None if account.password is not None else account.ha1,
            cnonce=new_cnonce(),
            nc=self._nc,
        )
        return name, credentials.render()

    def _registered(self, granted: int, now: float) -> None:
        self.state = State.REGISTERED
        self.accepted = True
        self._failing_since = None
        self._failures = 0
        self._challenges = 0
        self.refused = False
        self.expires_at = now + granted
        # RFC 5626 §4.4.1: refresh at a random point of the interval's later half, so that
        # registrations made together (a restart) do not refresh together.
        refresh = granted * self._rng.uniform(0.5, 0.8)
        self.due_at = now + min(refresh, max(granted - REFRESH_MARGIN_S, 1.0))

    def _failed(self, now: float, *, refused: bool = False) -> None:
        self.refused = refused
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since >= GIVE_UP_S:
            self.state = State.ENDED
            self.due_at = None
            return
        self._failures += 1
        self._challenges = 0
        self.state = State.BACKING_OFF
        # RFC 5626 §4.5: wait = min(max-time, base-time * 2^(failures-1)) * random[0.5, 1].
        wait = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (self._failures - 1))
        wait *= self._rng.uniform(0.5, 1.0)
        if refused:
            wait = max(wait, REFUSED_WAIT_S * self._rng.uniform(1.0, 1.5))
        self.due_at = now + wait
        if self.expires_at is not None and self.expires_at <= now:
            self.expires_at = None

    @property
    def failing_for(self) -> float | None:
        """Since when registering has failed (None: it is registered or just started)."""
        return self._failing_since if self.state is not State.REGISTERED else None


def _stale(response: Response, status: int) -> bool:
    """Whether a challenge says only that the nonce aged (RFC 7616 §3.3 `stale=true`)."""
    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    for value in response.headers.get_all(header):
        try:
            if parse_challenge(value).stale:
                return True
        except DigestError:
            continue
    return False


def _granted(response: Response, contact: str, asked: int) -> int:
    """The interval the registrar granted our Contact.

    §10.2.4: its expires parameter in the 200's Contact list, else the Expires header, else
    what was asked.
    """
    wanted = f"<{contact}>"
    for value in response.headers.get_all("Contact"):
        for item in value.split(","):
            if item.strip().startswith(wanted):
                for param in item.split(";")[1:]:
                    name, _, number = param.strip().partition("=")
                    if name.lower() == "expires" and number.strip().isdigit():
                        return int(number)
    header = response.headers.get("Expires") or ""
    return int(header) if header.strip().isdigit() else asked
