"""Errors of provisioning, each naming the field at fault where there is one.

ProvisioningError
├── NotFoundError          no such tenant / account
├── ConflictError          the code, domain or username is taken
├── InvalidInputError      a value breaks a rule that the schema alone cannot express
├── InsecureTransportError a secret came over plain HTTP (P2)
└── FeatureDisabledError   the account's configuration switches this feature off (P1)
"""

from __future__ import annotations


class ProvisioningError(Exception):
    """Base of provisioning errors."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFoundError(ProvisioningError):
    pass


class ConflictError(ProvisioningError):
    pass


class InvalidInputError(ProvisioningError):
    pass


class InsecureTransportError(ProvisioningError):
    """Secrets (a SIP account, P2) sent over a channel that is not confidential."""


class FeatureDisabledError(ProvisioningError):
    def __init__(self, feature: str, reason: str) -> None:
        super().__init__(f"feature {feature!r} is disabled for this account: {reason}")
        self.feature = feature
        self.reason = reason
