"""The request each provider gets: push type, topic, priority, expiry, limits."""

from __future__ import annotations

import json

import pytest

from ringfence.push.payload import (
    PayloadTooLargeError,
    apns_request,
    fcm_message,
    webhook_body,
)
from ringfence.push.provider import Notification, PushKind

NOW = 1_800_000_000.0


def test_a_call_is_a_voip_push_to_the_voip_topic_delivered_now_or_never() -> None:
    request = apns_request("org.example.phone", Notification(PushKind.CALL, "c1"), NOW)
    assert request.headers["apns-push-type"] == "voip"
    assert request.headers["apns-topic"] == "org.example.phone.voip"
    assert request.headers["apns-priority"] == "10"
    assert request.headers["apns-expiration"] == "0"
    assert json.loads(request.body) == {"rf": {"type": "call", "id": "c1"}}


def test_a_wake_up_is_a_background_push_with_priority_5_and_no_alert() -> None:
    request = apns_request("org.example.phone", Notification(PushKind.WAKE, "w1"), NOW)
    assert request.headers["apns-push-type"] == "background"
    assert request.headers["apns-topic"] == "org.example.phone"
    assert request.headers["apns-priority"] == "5"
    assert json.loads(request.body)["aps"] == {"content-available": 1}


@pytest.mark.parametrize(
    ("kind", "key"), [(PushKind.CALL_ENDED, "RF_CALL_ENDED"), (PushKind.MESSAGE, "RF_MESSAGE")]
)
def test_alerts_name_a_localisation_key_not_a_text(kind: PushKind, key: str) -> None:
    notification = Notification(kind, "a1", ttl_s=3600, collapse_id="call-7")
    request = apns_request("org.example.phone", notification, NOW)
    aps = json.loads(request.body)["aps"]
    assert request.headers["apns-push-type"] == "alert"
    assert aps["alert"] == {"loc-key": key}
    assert aps["mutable-content"] == 1
    assert request.headers["apns-expiration"] == str(int(NOW) + 3600)
    assert request.headers["apns-collapse-id"] == "call-7"


def test_payload_limits_are_4_kib_and_5_kib_for_voip() -> None:
    # Filler that brings the VoIP body to between 4 and 5 KiB: fine for VoIP, too big for alerts.
    data = {"x": "a" * 4500}
    apns_request("org.example.phone", Notification(PushKind.CALL, "c", data=data), NOW)
    with pytest.raises(PayloadTooLargeError):
        apns_request("org.example.phone", Notification(PushKind.MESSAGE, "m", data=data), NOW)
    with pytest.raises(PayloadTooLargeError):
        apns_request(
            "org.example.phone", Notification(PushKind.CALL, "c", data={"x": "a" * 5200}), NOW
        )


def test_a_collapse_id_over_64_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        apns_request(
            "org.example.phone", Notification(PushKind.MESSAGE, "m", collapse_id="x" * 65), NOW
        )


def test_fcm_messages_are_data_only_high_priority_for_calls_normal_for_wake_ups() -> None:
    call = fcm_message("tok", Notification(PushKind.CALL, "c1"))
    assert call == {
        "message": {
            "token": "tok",
            "data": {"type": "call", "id": "c1"},
            "android": {"priority": "high", "ttl": "0s"},
        }
    }
    wake = fcm_message("tok", Notification(PushKind.WAKE, "w1", ttl_s=600, collapse_id="reg"))
    assert wake["message"] == {
        "token": "tok",
        "data": {"type": "wake", "id": "w1"},
        "android": {"priority": "normal", "ttl": "600s", "collapse_key": "reg"},
    }
    with pytest.raises(PayloadTooLargeError):
        fcm_message("tok", Notification(PushKind.CALL, "c", data={"x": "a" * 4100}))


def test_webhook_body_is_the_plain_fields() -> None:
    body = webhook_body(Notification(PushKind.MESSAGE, "m1", data={"count": "2"}))
    assert json.loads(body) == {"count": "2", "type": "message", "id": "m1"}
    with pytest.raises(PayloadTooLargeError):
        webhook_body(Notification(PushKind.MESSAGE, "m", data={"x": "a" * 4100}))
