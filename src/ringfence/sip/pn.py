"""RFC 8599 push parameters of a Contact URI, and Linphone's variants of them.

A UA that can be woken by push puts, in the Contact URI of its REGISTER (RFC 8599 §4.1.1):

- `pn-provider`: the push service (`apns`, `fcm`, `webpush`; Linphone adds `apns.dev` for
  an app built for APNs's development environment);
- `pn-prid`: the device's token at that service;
- `pn-param`: what else the service needs to reach the app: for APNs the team id, bundle id
  and service (`ABCDE12345.org.example.phone.voip`), for FCM the project (sender) id.

Linphone (liblinphone 5) registers one iOS device with two tokens, one per APNs service:
`pn-prid=<remote token>:remote&<voip token>:voip` and
`pn-param=<TEAMID>.<bundle>.remote&voip`.

Nothing here does I/O; `ringfence.push` turns these into push targets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from urllib.parse import unquote

from ringfence.sip.uri import SipURI, URIError, parse_uri

#: RFC 8599 §4.1.1 names; Linphone's `apns.dev` is APNs's development environment.
PROVIDER_ALIASES = {
    "apns": ("apns", False),
    "apns.dev": ("apns", True),
    "fcm": ("fcm", False),
    "webpush": ("webhook", False),
    "webhook": ("webhook", False),
}
#: RFC 8599 §14.3: the media feature tag by which a UA asks to be woken by push to refresh
#: its binding, and the proxy's feature-capability indicator that it will (the value: how
#: many seconds before expiry the push comes at the latest).
PNSREG_TAG = "+sip.pnsreg"
#: Two minutes: time for the push to cross APNs or FCM and for the app to REGISTER.
PNSREG_S = 120
#: Longest token accepted (APNs tokens are 64 hex today, FCM's ~160, webhook URLs 2 KiB).
MAX_PRID_LENGTH = 4096


class PushParameterError(ValueError):
    """The Contact's push parameters are incomplete or malformed."""


@dataclass(frozen=True, slots=True)
class PushParameters:
    """The push parameters of one binding.

    Attributes:
        provider: The raw `pn-provider` value, lowercased (for 555 and traces).
        service: Which sender serves it: `apns`, `fcm` or `webhook`.
        sandbox: An APNs development-environment token.
        app: For APNs the bundle id, for FCM the project id, for a webhook "".
        team: The APNs team id from `pn-param`, when given.
        tokens: Token per purpose: `voip` (APNs PushKit, for calls) and/or `remote` (every
            other push); FCM and webhook have one token under `remote`.
    """

    provider: str
    service: str
    sandbox: bool
    app: str
    team: str | None = None
    tokens: dict[str, str] = field(default_factory=dict, repr=False)

    def token_for_call(self) -> str | None:
        """The token a ringing call is pushed to: the VoIP token when there is one."""
        return self.tokens.get("voip") or self.tokens.get("remote")

    def token_for_alert(self) -> str | None:
        """The token for alerts and background pushes, never the VoIP one.

        iOS requires every VoIP push to show a call.
        """
        return self.tokens.get("remote")

    @property
    def device_key(self) -> str:
        """What identifies the device across re-registrations: its call token."""
        return self.token_for_call() or ""


def has_push_parameters(uri: SipURI) -> bool:
    return uri.has_param("pn-provider")


def is_push_contact(contact: str) -> bool:
    """Whether a binding's Contact URI carries RFC 8599 push parameters.

    Cheap for the common case (no `pn-provider` in the text): it runs for every binding a
    request is routed to.
    """
    if "pn-provider" not in contact.lower():
        return False
    try:
        uri = parse_uri(contact)
    except URIError:
        return False
    return isinstance(uri, SipURI) and has_push_parameters(uri)


def push_parameters(contact: str | SipURI) -> PushParameters | None:
    """The push parameters of a Contact URI; None when it has no `pn-provider`.

    Raises:
        PushParameterError: `pn-provider` is given but `pn-prid` is missing or malformed.
    """
    if isinstance(contact, str):
        try:
            parsed = parse_uri(contact)
        except URIError:
            return None
        if not isinstance(parsed, SipURI):
            return None
        contact = parsed
    provider = contact.param("pn-provider")
    if provider is None:
        return None
    provider = unquote(provider).strip().lower()
    prid = unquote(contact.param("pn-prid") or "").strip()
    param = unquote(contact.param("pn-param") or "").strip()
    if not prid or len(prid) > MAX_PRID_LENGTH:
        raise PushParameterError("pn-prid is missing or too long")
    service, sandbox = PROVIDER_ALIASES.get(provider, (provider, False))
    if service == "apns":
        return _apns(provider, sandbox, prid, param)
    return PushParameters(provider, service, sandbox, param, tokens={"remote": prid})


def _apns(provider: str, sandbox: bool, prid: str, param: str) -> PushParameters:
    # pn-param: TEAMID.bundle.id.service, where service is "voip", "remote" or, from
    # Linphone, "remote&voip" (one token of each, in pn-prid).
    team, _, rest = param.partition(".")
    bundle, _, services = rest.rpartition(".")
    if not team or not bundle or not services:
        raise PushParameterError("pn-param is not TEAMID.bundle.service")
    names = services.split("&")
    if "&" in prid or ":" in prid:
        tokens: dict[str, str] = {}
        for part in prid.split("&"):
            token, _, kind = part.partition(":")
            if not token or kind not in {"voip", "remote"}:
                raise PushParameterError("pn-prid is not token:service&token:service")
            tokens[kind] = token
    elif len(names) == 1 and names[0] in {"voip", "remote"}:
        tokens = {names[0]: prid}
    else:
        raise PushParameterError("pn-param names services that pn-prid does not give")
    return PushParameters(provider, "apns", sandbox, bundle, team, tokens)


def without_push_parameters(uri: SipURI) -> SipURI:
    """The URI without any `pn-*` parameter (P4: kept nowhere when push is off)."""
    kept = tuple((name, value) for name, value in uri.params if not name.lower().startswith("pn-"))
    return dataclasses.replace(uri, params=kept)
