"""APNs over HTTP/2 and TLS against the stand-in: JWT, environments, dead tokens, back-off."""

from __future__ import annotations

import ssl

import httpx
import jwt
import pytest

from ringfence.push.apns import JWT_RENEW_AFTER_S, ApnsProvider, interpret
from ringfence.push.provider import (
    Delivered,
    Misconfigured,
    Notification,
    ProviderName,
    PushKind,
    PushTarget,
    Rejected,
    RetryAfter,
    TokenDead,
)
from ringfence.sandbox.record import Fault
from ringfence.sandbox.server import PushSandbox
from tests.support.clock import FakeClock

TOKEN = "a1" * 32
CALL = Notification(PushKind.CALL, "push-1")


def target(sandbox: PushSandbox, token: str = TOKEN, **fields: object) -> PushTarget:
    return PushTarget(ProviderName.APNS, sandbox.bundle_id, token, **fields)  # type: ignore[arg-type]


async def test_a_call_reaches_apns_as_a_voip_push_over_http2_with_a_valid_jwt(
    sandbox: PushSandbox, apns: ApnsProvider
) -> None:
    sandbox.apns.add_device(TOKEN, sandbox.bundle_id)
    result = await apns.send(target(sandbox), CALL)
    assert isinstance(result, Delivered)
    assert result.provider_id
    push = sandbox.apns.inbox.pushes[-1]
    assert push.http_version == "2"
    assert push.environment == "production"
    assert push.headers["apns-push-type"] == "voip"
    assert push.headers["apns-topic"] == f"{sandbox.bundle_id}.voip"
    assert push.payload == {"rf": {"type": "call", "id": "push-1"}}
    assert "authorization" not in push.headers  # the stand-in keeps no credentials


async def test_the_provider_token_is_reused_then_renewed_inside_apples_window(
    sandbox: PushSandbox, apns: ApnsProvider, clock: FakeClock
) -> None:
    sandbox.apns.add_device(TOKEN, sandbox.bundle_id)
    key = sandbox.apns.keys[sandbox.key_id]
    assert isinstance(await apns.send(target(sandbox), CALL), Delivered)
    first = key.last_issued_at
    clock.advance(10 * 60)
    assert isinstance(await apns.send(target(sandbox), CALL), Delivered)
    assert key.last_issued_at == first  # reused: renewing within 20 minutes is refused by Apple
    clock.advance(JWT_RENEW_AFTER_S)
    assert isinstance(await apns.send(target(sandbox), CALL), Delivered)
    assert key.last_issued_at is not None
    assert first is not None
    assert key.last_issued_at - first >= 20 * 60  # renewed, and never older than an hour


async def test_an_expired_provider_token_is_renewed_once_and_the_push_sent(
    sandbox: PushSandbox, apns: ApnsProvider, clock: FakeClock
) -> None:
    sandbox.apns.add_device(TOKEN, sandbox.bundle_id)
    assert isinstance(await apns.send(target(sandbox), CALL), Delivered)
    clock.advance(30 * 60)
    # Apple's clock runs ahead of ours by 35 minutes: it calls our 30-minute-old token expired.
    apple = FakeClock(clock.now())
    apple.advance(35 * 60)
    sandbox.apns.clock = apple
    assert isinstance(await apns.send(target(sandbox), CALL), Delivered)
    assert len(sandbox.apns.inbox.pushes) == 2


async def test_a_key_apple_does_not_know_is_a_configuration_fault(
    sandbox: PushSandbox, apns: ApnsProvider
) -> None:
    sandbox.apns.add_device(TOKEN, sandbox.bundle_id)
    sandbox.apns.keys.clear()
    result = await apns.send(target(sandbox), CALL)
    assert result == Misconfigured("APNs 403 InvalidProviderToken")
    assert sandbox.apns.inbox.pushes == []


async def test_a_development_token_sent_to_production_is_retried_once_on_the_sandbox(
    sandbox: PushSandbox, apns: ApnsProvider
) -> None:
    sandbox.apns.add_device(TOKEN, sandbox.bundle_id, sandbox=True)
    result = await apns.send(target(sandbox), CALL)
    assert isinstance(result, Delivered)
    assert result.sandbox
    assert [p.environment for p in sandbox.apns.inbox.pushes] == ["sandbox"]


async def test_a_token_neither_environment_knows_is_dead(
    sandbox: PushSandbox, apns: ApnsProvider
) -> None:
    assert await apns.send(target(sandbox), CALL) == TokenDead(
        "APNs 400 BadDeviceToken in both environments"
    )


async def test_410_unregistered_kills_the_token_only_if_later_than_its_registration(
    sandbox: PushSandbox, apns: ApnsProvider, clock: FakeClock
) -> None:
    sandbox.apns.add_device(TOKEN, sandbox.bundle_id)
    now = clock.now().timestamp()
    sandbox.apns.unregister(TOKEN, at_ms=int((now - 60) * 1000))
    # The app registered the token again after Apple saw it invalid: not a deletion.
    reregistered = await apns.send(target(sandbox, registered_at=now - 30), CALL)
    assert isinstance(reregistered, Rejected)
    stale = await apns.send(target(sandbox, registered_at=now - 3600), CALL)
    assert stale == TokenDead("APNs 410 Unregistered")


async def test_a_token_for_another_app_is_dead(sandbox: PushSandbox, apns: ApnsProvider) -> None:
    sandbox.apns.add_app("org.example.other")
    sandbox.apns.add_device(TOKEN, "org.example.other")
    assert await apns.send(target(sandbox), CALL) == TokenDead("APNs 400 DeviceTokenNotForTopic")


async def test_429_and_503_ask_for_a_retry_honouring_retry_after(
    sandbox: PushSandbox, apns: ApnsProvider
) -> None:
    sandbox.apns.add_device(TOKEN, sandbox.bundle_id)
    sandbox.apns.fail_next(Fault(429, "TooManyRequests", retry_after="7"))
    sandbox.apns.fail_next(Fault(503, "ServiceUnavailable"))
    assert await apns.send(target(sandbox), CALL) == RetryAfter("APNs 429 TooManyRequests", 7.0)
    assert await apns.send(target(sandbox), CALL) == RetryAfter("APNs 503 ServiceUnavailable", None)
    assert isinstance(await apns.send(target(sandbox), CALL), Delivered)


async def test_an_app_without_settings_and_a_malformed_token_are_not_sent(
    sandbox: PushSandbox, apns: ApnsProvider
) -> None:
    other = PushTarget(ProviderName.APNS, "org.example.unknown", TOKEN)
    assert isinstance(await apns.send(other, CALL), Misconfigured)
    # Not hex: it could not be an APNs token, and it must never reach the URL path.
    assert isinstance(await apns.send(target(sandbox, token="../../3/device/x"), CALL), TokenDead)
    assert sandbox.apns.inbox.pushes == []


async def test_the_stand_in_holds_to_apples_rules(sandbox: PushSandbox, apns: ApnsProvider) -> None:
    """The stand-in refuses what Apple refuses, so the client is tested against the contract."""
    ca = ssl.create_default_context(cafile=sandbox.certificate.cert_file)
    token = apns._apps[sandbox.bundle_id].token
    assert token is not None
    sandbox.apns.add_device(TOKEN, sandbox.bundle_id)
    bearer = f"bearer {token.current(sandbox.apns.clock.now().timestamp())}"
    url = f"{sandbox.apns_url}/3/device/{TOKEN}"
    base = {"authorization": bearer, "apns-topic": sandbox.bundle_id}
    async with httpx.AsyncClient(http2=True, verify=ca) as client:

        async def reason(headers: dict[str, str], body: bytes = b'{"aps":{}}') -> tuple[int, str]:
            answer = await client.post(url, headers={**base, **headers}, content=body)
            return answer.status_code, answer.json()["reason"] if answer.content else ""

        assert await reason({"apns-push-type": "background", "apns-priority": "10"}) == (
            400,
            "BadPriority",
        )
        assert await reason({"apns-push-type": "voip"}) == (400, "InvalidPushType")
        assert await reason({"apns-push-type": "alert"}, b"") == (400, "PayloadEmpty")
        assert await reason({"apns-push-type": "alert"}, b'{"x":"' + b"a" * 4100 + b'"}') == (
            413,
            "PayloadTooLarge",
        )
        assert await reason({"apns-push-type": "alert", "authorization": "bearer x"}) == (
            403,
            "InvalidProviderToken",
        )
        assert await reason({"apns-push-type": "alert"}) == (200, "")
    async with httpx.AsyncClient(verify=ca) as http1:
        answer = await http1.post(url, headers={**base, "apns-push-type": "alert"}, content=b"{}")
        assert answer.status_code == 400  # Apple speaks HTTP/2 only


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, b'{"reason":"BadTopic"}', Misconfigured("APNs 400 BadTopic")),
        (403, b'{"reason":"BadCertificate"}', Misconfigured("APNs 403 BadCertificate")),
        (413, b'{"reason":"PayloadTooLarge"}', Rejected("APNs 413 PayloadTooLarge")),
        (500, b'{"reason":"InternalServerError"}', RetryAfter("APNs 500 InternalServerError")),
        (410, b'{"reason":"ExpiredToken"}', TokenDead("APNs 410 ExpiredToken")),
        (502, b"<html>", RetryAfter("APNs 502 Unknown")),
        (
            429,
            b'{"reason":"TooManyProviderTokenUpdates"}',
            RetryAfter("APNs 429 TooManyProviderTokenUpdates", 1200),
        ),
    ],
)
def test_apns_answers_are_sorted_by_what_to_do_next(
    status: int, body: bytes, expected: object
) -> None:
    result, _ = interpret(status, {}, body, PushTarget(ProviderName.APNS, "a.b", TOKEN), 0.0)
    assert result == expected


def test_the_jwt_carries_kid_team_and_iat_signed_es256(
    sandbox: PushSandbox, apns: ApnsProvider
) -> None:
    token = apns._apps[sandbox.bundle_id].token
    assert token is not None
    encoded = token.current(1_800_000_000.0)
    assert jwt.get_unverified_header(encoded) == {
        "alg": "ES256",
        "kid": sandbox.key_id,
        "typ": "JWT",
    }
    claims = jwt.decode(
        encoded,
        sandbox.apns.keys[sandbox.key_id].public_key,
        algorithms=["ES256"],
        options={"verify_iat": False},
    )
    assert claims == {"iss": sandbox.team_id, "iat": 1_800_000_000}
