"""Errors of authentication.

AuthError
├── InvalidCredentialsError   wrong login, password or token (never says which)
├── AccountSuspendedError     right credentials, but the account may not log in
└── RateLimitedError          too many failures; carries retry_after_s
"""

from __future__ import annotations


class AuthError(Exception):
    """Base of authentication errors."""


class InvalidCredentialsError(AuthError):
    pass


class AccountSuspendedError(AuthError):
    pass


class RateLimitedError(AuthError):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many failed attempts; retry after {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s
