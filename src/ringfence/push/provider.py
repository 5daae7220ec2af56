"""The push interface: what to send, to whom, and what the provider's answer means.

A provider's answer is sorted by what the caller does next, never by HTTP status:

- `Delivered`: the provider accepted the push (it may still arrive late or not at all:
  neither APNs nor FCM reports delivery).
- `RetryAfter`: a temporary failure (429, 5xx, a dropped connection); try again after
  `seconds`, or after the caller's own backoff when the provider named no time.
- `TokenDead`: the device token will never work again; forget it (and its binding).
- `Misconfigured`: the provider refused our credentials or topic; no retry helps until an
  operator fixes the settings. Never a reason to delete a token.
- `Rejected`: this one push was refused (too large, a bad field); the token is fine.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class PushKind(enum.StrEnum):
    """What a push is for; it decides the push type, priority and expiry."""

    #: A ringing call: an APNs VoIP push, an FCM high-priority data message. iOS requires
    #: every VoIP push to be reported to CallKit as a call, so nothing else may use this kind.
    CALL = "call"
    #: The call the device was woken for ended before it answered (cancelled, answered
    #: elsewhere, no answer): a visible alert, never a second VoIP push.
    CALL_ENDED = "call_ended"
    #: A message is waiting: a visible alert.
    MESSAGE = "message"
    #: Refresh your registration (RFC 8599 `+sip.pnsreg`): a silent background push.
    WAKE = "wake"
    #: Overlay mode: the instance (and the account kept on the PBX for it) ends in about
    #: 12 hours unless the app reports again: a visible alert.
    INSTANCE_EXPIRING = "instance_expiring"
    #: Overlay mode: the instance ended (expired, or the PBX refused it for 12 hours): no
    #: more calls reach the device until the app reports again. A visible alert.
    INSTANCE_ENDED = "instance_ended"
    #: Overlay mode: the PBX refuses the account's credentials (a changed password): the app
    #: should ask its user and report the account again. Retried meanwhile, slowly. A
    #: visible alert.
    INSTANCE_REFUSED = "instance_refused"


class ProviderName(enum.StrEnum):
    """The push services, named as RFC 8599's `pn-provider` names them."""

    APNS = "apns"
    FCM = "fcm"
    #: UnifiedPush and other HTTP endpoints: the token is the device's endpoint URL.
    WEBHOOK = "webhook"


@dataclass(frozen=True, slots=True)
class Notification:
    """One push, as the provider-neutral content that every provider maps to its format.

    Attributes:
        kind: What the push is for.
        push_id: An opaque id that the app matches with the SIP request it is woken for
            (Acrobits' `X-Push-ID`); it reveals nothing about the caller.
        ttl_s: How long the provider may hold the push for an offline device; 0 means now or
            never, right for calls (a late ring is worse than none).
        collapse_id: Pushes with the same id replace each other on the device.
        data: Further string fields for the app (`reason`, `count`); never personal data,
            since the push travels through Apple's or Google's servers.
    """

    kind: PushKind
    push_id: str
    ttl_s: int = 0
    collapse_id: str | None = None
    data: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PushTarget:
    """One device token of one app.

    Attributes:
        provider: Which service the token belongs to.
        app: The app as the provider knows it: the iOS bundle id (without `.voip`), the
            Firebase project id, or "" for a webhook.
        token: The device token (APNs hex, FCM registration token, or the webhook URL).
        registered_at: When ringfence last received this token (UNIX seconds): a 410 from
            APNs deletes a token only if Apple saw it invalid after this time.
        sandbox: An APNs development token (from a debug build of the app).
    """

    provider: ProviderName
    app: str
    token: str = field(repr=False)
    registered_at: float = 0.0
    sandbox: bool = False

    @property
    def fingerprint(self) -> str:
        """A short form of the token that is safe to log."""
        return fingerprint(self.token)


def fingerprint(token: str) -> str:
    """The first and last four characters of a token: enough to tell two apart in a log."""
    if len(token) <= 12:
        return "…"
    return f"{token[:4]}…{token[-4:]}"


@dataclass(frozen=True, slots=True)
class Delivered:
    """The provider accepted the push.

    Attributes:
        provider_id: The provider's id for it (`apns-id`, FCM's message name), for traces.
        sandbox: APNs answered on its development environment (the token is a sandbox one).
    """

    provider_id: str | None = None
    sandbox: bool = False


@dataclass(frozen=True, slots=True)
class RetryAfter:
    """A temporary failure: try again after `seconds`, or after a backoff when None."""

    reason: str
    seconds: float | None = None


@dataclass(frozen=True, slots=True)
class TokenDead:
    """The token is gone for good (the app was removed, or the token replaced)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Misconfigured:
    """Our credentials, topic or project are refused: an operator must fix the settings."""

    reason: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """This push was refused, for a reason that retrying it unchanged cannot fix."""

    reason: str


PushResult = Delivered | RetryAfter | TokenDead | Misconfigured | Rejected


class PushProvider(Protocol):
    """One push service, for every app configured for it."""

    name: ProviderName

    def serves(self, target: PushTarget) -> bool:
        """Whether this provider has settings for `target`'s app."""
        ...

    async def send(self, target: PushTarget, notification: Notification) -> PushResult:
        """Send one push; never raises for anything the provider or the network does."""
        ...

    async def aclose(self) -> None:
        """Close the provider's connections."""
        ...
