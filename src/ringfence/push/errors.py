"""Errors of the push providers.

    PushError
    └── PushConfigError   a provider's settings or key material cannot be used (fix the settings)

A push that fails is not an exception: `PushProvider.send` returns a `PushResult` that says
what to do next (sygnal's rule: a dead token is data, not an error).
"""

from __future__ import annotations


class PushError(Exception):
    """Base of every error of `ringfence.push`."""


class PushConfigError(PushError, ValueError):
    """A provider's settings, key or service account cannot be used."""
