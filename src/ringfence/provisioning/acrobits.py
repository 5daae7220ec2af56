"""Account XML for Acrobits Cloud Softphone-based apps (external provisioning).

The app calls the provider's provisioning URL with the login it was given and merges the
`<account>` document it gets into its portal defaults; a non-2xx answer stops provisioning and
the text of `<message>` is shown to the user. Element names follow Acrobits' published Account
XML reference (doc.acrobits.net, "Account XML"): `title`, `username`, `password`,
`authUsername`, `userDisplayName`, `host`, `allowMessage`, `icm`, `cloud_username`.

Only what the account's configuration switches on is written (P1): a disabled feature gets no
setting that would let the app use it.
"""

from __future__ import annotations

# Building documents only: nothing here parses untrusted XML.
from xml.etree.ElementTree import Element, SubElement, tostring

from ringfence.provisioning.features import Feature
from ringfence.provisioning.models import Account


def _text(parent: Element, tag: str, value: str) -> None:
    SubElement(parent, tag).text = value


def _document(root: Element) -> bytes:
    document: bytes = tostring(root, encoding="UTF-8", xml_declaration=True)
    return document


def account_xml(account: Account, *, login: str, password: str | None = None) -> bytes:
    """The `<account>` document of `account`.

    `password` is the SIP password the caller has just proven it knows (the app logs in with
    it); ringfence never stores it, so it can be written back only in that same exchange.
    """
    root = Element("account")
    _text(root, "title", account.display_name or account.username)
    _text(root, "cloud_username", login)
    _text(root, "username", account.username)
    _text(root, "authUsername", account.username)
    if password is not None:
        _text(root, "password", password)
    if account.display_name:
        _text(root, "userDisplayName", account.display_name)
    _text(root, "host", account.tenant.sip_domain)
    _text(root, "allowMessage", "1" if account.config.is_enabled(Feature.MESSAGING) else "0")
    if account.config.is_enabled(Feature.PUSH):
        # Incoming call mode: wake the app by push instead of keeping it registered.
        _text(root, "icm", "push")
    return _document(root)


def error_xml(message: str) -> bytes:
    """The document shown to the user when provisioning is refused."""
    root = Element("error")
    _text(root, "message", message)
    return _document(root)
