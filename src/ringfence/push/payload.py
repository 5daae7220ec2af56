"""The request each provider gets for a `Notification`: pure, so every field is tested.

Privacy: a push travels through Apple's or Google's servers, so it carries no personal data.
The app gets the kind of push and an opaque id; alerts name a localisation key
(`loc-key`), not a text, and set `mutable-content` so the app's notification extension can
fetch the details from ringfence over HTTPS and show them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ringfence.push.provider import Notification, PushKind

#: APNs payload limits (Apple, "Sending notification requests to APNs").
APNS_MAX_PAYLOAD_BYTES = 4096
APNS_MAX_VOIP_PAYLOAD_BYTES = 5120
#: FCM: the data payload of one message.
FCM_MAX_DATA_BYTES = 4096
#: UnifiedPush: what every distributor accepts.
WEBHOOK_MAX_BODY_BYTES = 4096
#: apns-collapse-id is at most 64 bytes.
APNS_MAX_COLLAPSE_ID_BYTES = 64

#: Localisation keys the app's strings file resolves (nothing readable goes to Apple).
ALERT_KEYS = {
    PushKind.CALL_ENDED: "RF_CALL_ENDED",
    PushKind.MESSAGE: "RF_MESSAGE",
    PushKind.INSTANCE_EXPIRING: "RF_INSTANCE_EXPIRING",
    PushKind.INSTANCE_ENDED: "RF_INSTANCE_ENDED",
    PushKind.INSTANCE_REFUSED: "RF_INSTANCE_REFUSED",
}


class PayloadTooLargeError(ValueError):
    """The push would exceed the provider's limit."""


@dataclass(frozen=True, slots=True)
class ApnsRequest:
    """The headers (without authorization) and the body of one APNs request."""

    headers: dict[str, str]
    body: bytes


def _fields(notification: Notification) -> dict[str, str]:
    return {**notification.data, "type": notification.kind.value, "id": notification.push_id}


def _dump(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def apns_request(bundle_id: str, notification: Notification, now: float) -> ApnsRequest:
    """The APNs request for `notification` to an app whose bundle id is `bundle_id`.

    Args:
        bundle_id: The app's bundle id; VoIP pushes go to the `.voip` topic.
        notification: What to send.
        now: UNIX seconds, for `apns-expiration` when the push may wait.

    Raises:
        PayloadTooLargeError: over 4 KiB (5 KiB for VoIP).
        ValueError: a collapse id over 64 bytes.
    """
    kind = notification.kind
    rf = _fields(notification)
    if kind is PushKind.CALL:
        push_type, topic, priority = "voip", f"{bundle_id}.voip", "10"
        payload: dict[str, object] = {"rf": rf}
        limit = APNS_MAX_VOIP_PAYLOAD_BYTES
    elif kind is PushKind.WAKE:
        # Background pushes must have priority 5 and no alert, sound or badge.
        push_type, topic, priority = "background", bundle_id, "5"
        payload = {"aps": {"content-available": 1}, "rf": rf}
        limit = APNS_MAX_PAYLOAD_BYTES
    else:
        push_type, topic, priority = "alert", bundle_id, "10"
        aps = {"alert": {"loc-key": ALERT_KEYS[kind]}, "sound": "default", "mutable-content": 1}
        payload = {"aps": aps, "rf": rf}
        limit = APNS_MAX_PAYLOAD_BYTES
    body = _dump(payload)
    if len(body) > limit:
        raise PayloadTooLargeError(f"APNs {push_type} payload is {len(body)} bytes, over {limit}")
    # 0: deliver now or never (a call); otherwise APNs may store it until then.
    expiration = "0" if notification.ttl_s == 0 else str(int(now) + notification.ttl_s)
    headers = {
        "apns-push-type": push_type,
        "apns-topic": topic,
        "apns-priority": priority,
        "apns-expiration": expiration,
        "content-type": "application/json",
    }
    if notification.collapse_id is not None:
        if len(notification.collapse_id.encode()) > APNS_MAX_COLLAPSE_ID_BYTES:
            raise ValueError("apns-collapse-id is longer than 64 bytes")
        headers["apns-collapse-id"] = notification.collapse_id
    return ApnsRequest(headers=headers, body=body)


def fcm_message(token: str, notification: Notification) -> dict[str, object]:
    """The FCM HTTP v1 `messages:send` body: a data-only message.

    Data-only, so the app decides what to show (and can fetch the details first). Calls,
    call-ended and message pushes are high priority: they wake a dozing phone and each leads
    to a visible notification, as FCM requires of high-priority messages.

    Raises:
        PayloadTooLargeError: the data is over 4 KiB.
    """
    data = _fields(notification)
    size = len(_dump(data))
    if size > FCM_MAX_DATA_BYTES:
        raise PayloadTooLargeError(f"FCM data is {size} bytes, over {FCM_MAX_DATA_BYTES}")
    android: dict[str, str] = {
        "priority": "normal" if notification.kind is PushKind.WAKE else "high",
        "ttl": f"{notification.ttl_s}s",
    }
    if notification.collapse_id is not None:
        android["collapse_key"] = notification.collapse_id
    return {"message": {"token": token, "data": data, "android": android}}


def webhook_body(notification: Notification) -> bytes:
    """The JSON a webhook (UnifiedPush) endpoint receives.

    Raises:
        PayloadTooLargeError: over 4 KiB.
    """
    body = _dump(_fields(notification))
    if len(body) > WEBHOOK_MAX_BODY_BYTES:
        raise PayloadTooLargeError(f"webhook body is {len(body)} bytes")
    return body
