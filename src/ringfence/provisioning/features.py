"""The account configuration: one switch per feature, tenant defaults and account overrides.

A tenant holds a complete `FeatureConfig`, the default of its accounts. An account holds only
its overrides, a partial tree of the same shape; the effective configuration is the tenant's
defaults with the overrides laid over them, validated as a whole, so an override can never
produce a configuration that the tenant could not have had itself.
"""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ringfence.provisioning.errors import FeatureDisabledError, InvalidInputError


class Feature(enum.StrEnum):
    """The features that process personal data, each behind its own switch (P1)."""

    PUSH = "push"
    SMART_CONTACTS = "smart_contacts"
    BLF = "blf"
    LOCATION = "location"
    ATTACHMENTS = "attachments"
    MESSAGING = "messaging"
    CALENDAR = "calendar"
    ANALYTICS = "analytics"
    DEBUG_LOGS = "debug_logs"


class PushMode(enum.StrEnum):
    #: Woken by push notifications; the push server holds a push instance (P3).
    PUSH = "push"
    #: The app keeps its own registration alive in the background; nothing goes to the push
    #: server (P4).
    KEEPALIVE = "keepalive"
    #: No background mode: the app receives calls only while in the foreground.
    NONE = "none"


class LocationMode(enum.StrEnum):
    OFF = "off"
    #: Location only for emergency calls, where the country requires it (P8).
    EMERGENCY = "emergency"
    #: The account also sends its location at registration; it expires with the registration.
    REGISTRATION = "registration"


class _Switches(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PushConfig(_Switches):
    mode: PushMode = PushMode.PUSH
    #: How long a push instance lives before it is erased (P3): 3 to 6 days.
    instance_max_age_days: int = Field(default=3, ge=3, le=6)


class SwitchConfig(_Switches):
    enabled: bool = False


class LocationConfig(_Switches):
    mode: LocationMode = LocationMode.OFF
    #: ISO 3166-1 alpha-2 country whose emergency-location rules apply.
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")

    @model_validator(mode="after")
    def _country_when_on(self) -> LocationConfig:
        if self.mode is not LocationMode.OFF and self.country is None:
            raise ValueError("country is required when location mode is not 'off'")
        return self


#: 25 MiB: what the common mobile messengers accept for one attachment.
DEFAULT_ATTACHMENT_MAX_BYTES = 25 * 1024 * 1024
ATTACHMENT_MAX_BYTES_CEILING = 1024 * 1024 * 1024


class AttachmentsConfig(_Switches):
    enabled: bool = True
    max_size_bytes: int = Field(
        default=DEFAULT_ATTACHMENT_MAX_BYTES, ge=1, le=ATTACHMENT_MAX_BYTES_CEILING
    )
    #: How long an uploaded file is kept for its recipients to fetch (P9, P15).
    retention_days: int = Field(default=30, ge=1, le=365)


class MessagingConfig(_Switches):
    enabled: bool = True
    #: How long the message history keeps a message, sent or received (P15).
    retention_days: int = Field(default=90, ge=1, le=3650)


class FeatureConfig(_Switches):
    """The complete configuration of an account (or a tenant's defaults)."""

    push: PushConfig = PushConfig()
    smart_contacts: SwitchConfig = SwitchConfig()
    blf: SwitchConfig = SwitchConfig()
    location: LocationConfig = LocationConfig()
    attachments: AttachmentsConfig = AttachmentsConfig()
    messaging: MessagingConfig = MessagingConfig()
    calendar: SwitchConfig = SwitchConfig()
    analytics: SwitchConfig = SwitchConfig()
    debug_logs: SwitchConfig = SwitchConfig()

    def is_enabled(self, feature: Feature) -> bool:
        if feature is Feature.PUSH:
            return self.push.mode is PushMode.PUSH
        if feature is Feature.LOCATION:
            return self.location.mode is not LocationMode.OFF
        switch: SwitchConfig | AttachmentsConfig | MessagingConfig = getattr(self, feature.value)
        return switch.enabled

    def require(self, feature: Feature) -> None:
        """Raise `FeatureDisabledError` unless `feature` is on (P1)."""
        if self.is_enabled(feature):
            return
        if feature is Feature.PUSH:
            reason = f"push mode is {self.push.mode.value!r}, not 'push'"
        elif feature is Feature.LOCATION:
            reason = "location mode is 'off'"
        else:
            reason = f"{feature.value}.enabled is false"
        raise FeatureDisabledError(feature.value, reason)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _error_field(exc: ValidationError, prefix: str) -> tuple[str, str]:
    first = exc.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    reason = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    return (f"{prefix}.{loc}" if loc else prefix), reason


def validate_config(data: dict[str, Any], *, field: str = "config") -> FeatureConfig:
    """Validate a complete configuration (a tenant's defaults).

    Raises:
        InvalidInputError: naming the first offending key.
    """
    try:
        return FeatureConfig.model_validate(data)
    except ValidationError as exc:
        where, reason = _error_field(exc, field)
        raise InvalidInputError(f"{where}: {reason}", field=where) from exc


def effective_config(
    defaults: FeatureConfig, overrides: dict[str, Any], *, field: str = "config"
) -> FeatureConfig:
    """The tenant's defaults with an account's overrides laid over them.

    Raises:
        InvalidInputError: an override names an unknown key or makes the result invalid.
    """
    return validate_config(_merge(defaults.model_dump(mode="json"), overrides), field=field)


def merge_overrides(current: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """Lay a change over stored overrides; a `None` leaf removes that override."""
    merged = _merge(current, change)

    def prune(tree: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                sub = prune(value)
                if sub:
                    out[key] = sub
            elif value is not None:
                out[key] = value
        return out

    return prune(merged)
