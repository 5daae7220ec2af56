"""Errors of the SIP core.

    SIPError
    ├── LocalProtocolError    we were about to break the protocol (a bug on our side)
    └── RemoteProtocolError   the peer broke it
        └── ParseError        the bytes are not a SIP message at all

Each carries `status_hint`: the response a server would answer with, when it can answer at
all (h11's `error_status_hint`). A message that does not parse cannot be answered in SIP
(there is no Via to answer to), so the transport drops it or closes the connection; the hint
is for logs and for stream transports that answer before closing.
"""

from __future__ import annotations


class SIPError(Exception):
    """Base of the SIP core's errors."""

    def __init__(self, message: str, status_hint: int = 400) -> None:
        super().__init__(message)
        self.status_hint = status_hint


class LocalProtocolError(SIPError):
    """We were about to send something the protocol forbids."""


class RemoteProtocolError(SIPError):
    """The peer sent something the protocol forbids."""


class ParseError(RemoteProtocolError):
    """The bytes are not a well-formed SIP message."""
