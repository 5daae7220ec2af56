"""Feature switches: defaults, overrides, validation, and the P1 gate."""

from __future__ import annotations

import pytest

from ringfence.provisioning.errors import FeatureDisabledError, InvalidInputError
from ringfence.provisioning.features import (
    Feature,
    FeatureConfig,
    LocationMode,
    PushMode,
    effective_config,
    merge_overrides,
    validate_config,
)


def test_defaults() -> None:
    config = FeatureConfig()
    assert config.push.mode is PushMode.PUSH
    assert config.push.instance_max_age_days == 3
    assert config.location.mode is LocationMode.OFF
    on = {f for f in Feature if config.is_enabled(f)}
    assert on == {Feature.PUSH, Feature.ATTACHMENTS, Feature.MESSAGING}


def test_overrides_lay_over_defaults() -> None:
    defaults = FeatureConfig()
    config = effective_config(
        defaults, {"blf": {"enabled": True}, "push": {"instance_max_age_days": 6}}
    )
    assert config.blf.enabled is True
    assert config.push.instance_max_age_days == 6
    assert config.push.mode is PushMode.PUSH  # sibling key kept from the defaults


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"push": {"instance_max_age_days": 7}}, "config.push.instance_max_age_days"),
        ({"push": {"instance_max_age_days": 2}}, "config.push.instance_max_age_days"),
        ({"push": {"mode": "carrier-pigeon"}}, "config.push.mode"),
        ({"blf": {"enabeld": True}}, "config.blf.enabeld"),
        ({"teleport": {"enabled": True}}, "config.teleport"),
        ({"location": {"mode": "emergency"}}, "config.location"),
        ({"location": {"mode": "off", "country": "Switzerland"}}, "config.location.country"),
    ],
)
def test_invalid_overrides_name_the_key(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        effective_config(FeatureConfig(), overrides)
    assert caught.value.field == field


def test_validate_config_rejects_unknown_keys() -> None:
    with pytest.raises(InvalidInputError, match="unknown key"):
        validate_config({"push": {"mode": "push", "extra": 1}})


def test_merge_overrides_removes_with_null() -> None:
    current = {"blf": {"enabled": True}, "push": {"mode": "keepalive"}}
    assert merge_overrides(current, {"blf": {"enabled": None}}) == {"push": {"mode": "keepalive"}}
    assert merge_overrides(current, {"push": {"instance_max_age_days": 4}}) == {
        "blf": {"enabled": True},
        "push": {"mode": "keepalive", "instance_max_age_days": 4},
    }


@pytest.mark.promise("P1")
@pytest.mark.parametrize("feature", list(Feature))
def test_require_refuses_each_disabled_feature_with_its_reason(feature: Feature) -> None:
    off = effective_config(
        FeatureConfig(),
        {
            "push": {"mode": "keepalive"},
            "location": {"mode": "off"},
            **{
                f.value: {"enabled": False}
                for f in Feature
                if f not in (Feature.PUSH, Feature.LOCATION)
            },
        },
    )
    with pytest.raises(FeatureDisabledError) as caught:
        off.require(feature)
    assert caught.value.feature == feature.value
    assert caught.value.reason


@pytest.mark.promise("P4")
def test_push_is_off_in_keepalive_and_none_modes() -> None:
    for mode in ("keepalive", "none"):
        config = effective_config(FeatureConfig(), {"push": {"mode": mode}})
        assert not config.is_enabled(Feature.PUSH)
