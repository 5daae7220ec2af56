"""Errors of the SIP transports.

    TransportError
    ├── ConfigError        the transport configuration is inconsistent (a bug in the caller)
    ├── CertificateError   the TLS certificate or key cannot be read, made or used
    └── ListenError        a listener cannot bind its address (in use, no permission)

Errors of single connections are not raised: a peer that breaks framing, floods or idles is
closed, and `send` reports a dead flow by returning False.
"""

from __future__ import annotations


class TransportError(Exception):
    """Base of every error of `ringfence.transport`."""


class ConfigError(TransportError, ValueError):
    """The configuration asks for something impossible; fix the settings."""


class CertificateError(TransportError):
    """The TLS certificate or key cannot be loaded, created, or do not match."""


class ListenError(TransportError):
    """A listener cannot bind its host and port."""
