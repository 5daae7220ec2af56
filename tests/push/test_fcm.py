"""FCM HTTP v1 against the stand-ins of Google's token endpoint and FCM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ringfence.config import FcmAppSettings
from ringfence.push.errors import PushConfigError
from ringfence.push.fcm import REFRESH_EARLY_S, FcmProvider, ServiceAccount, interpret
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
from ringfence.sandbox.fcm import ACCESS_TOKEN_LIFETIME_S
from ringfence.sandbox.record import Fault
from ringfence.sandbox.server import PushSandbox
from tests.support.clock import FakeClock

CALL = Notification(PushKind.CALL, "push-1")


def target(sandbox: PushSandbox, token: str = "fcm-device-1") -> PushTarget:
    return PushTarget(ProviderName.FCM, sandbox.project_id, token)


async def test_a_call_is_a_high_priority_data_message_sent_with_an_oauth2_token(
    sandbox: PushSandbox, fcm: FcmProvider
) -> None:
    result = await fcm.send(target(sandbox), CALL)
    assert isinstance(result, Delivered)
    assert result.provider_id is not None
    assert result.provider_id.startswith(f"projects/{sandbox.project_id}/messages/")
    push = sandbox.fcm.inbox.pushes[-1]
    assert push.http_version == "2"
    assert push.payload == {
        "token": "fcm-device-1",
        "data": {"type": "call", "id": "push-1"},
        "android": {"priority": "high", "ttl": "0s"},
    }
    assert sandbox.fcm.token_requests == 1


async def test_the_access_token_is_cached_and_refreshed_shortly_before_it_expires(
    sandbox: PushSandbox, fcm: FcmProvider, clock: FakeClock
) -> None:
    for _ in range(3):
        assert isinstance(await fcm.send(target(sandbox), CALL), Delivered)
    assert sandbox.fcm.token_requests == 1
    clock.advance(ACCESS_TOKEN_LIFETIME_S - REFRESH_EARLY_S + 1)
    assert isinstance(await fcm.send(target(sandbox), CALL), Delivered)
    assert sandbox.fcm.token_requests == 2


async def test_a_revoked_access_token_is_replaced_once(
    sandbox: PushSandbox, fcm: FcmProvider
) -> None:
    assert isinstance(await fcm.send(target(sandbox), CALL), Delivered)
    sandbox.fcm.revoke_access_tokens()
    assert isinstance(await fcm.send(target(sandbox), CALL), Delivered)
    assert sandbox.fcm.token_requests == 2


async def test_unregistered_and_foreign_tokens_are_dead(
    sandbox: PushSandbox, fcm: FcmProvider
) -> None:
    sandbox.fcm.unregister("gone")
    sandbox.fcm.add_device("foreign", "another-project")
    assert await fcm.send(target(sandbox, "gone"), CALL) == TokenDead("FCM 404 UNREGISTERED")
    assert await fcm.send(target(sandbox, "foreign"), CALL) == TokenDead(
        "FCM 403 SENDER_ID_MISMATCH"
    )


async def test_quota_and_unavailable_ask_for_a_retry(
    sandbox: PushSandbox, fcm: FcmProvider
) -> None:
    sandbox.fcm.fail_next(Fault(429, "QUOTA_EXCEEDED", retry_after="12"))
    sandbox.fcm.fail_next(Fault(503, "UNAVAILABLE"))
    assert await fcm.send(target(sandbox), CALL) == RetryAfter("FCM 429 QUOTA_EXCEEDED", 12.0)
    assert await fcm.send(target(sandbox), CALL) == RetryAfter("FCM 503 UNAVAILABLE", None)
    assert isinstance(await fcm.send(target(sandbox), CALL), Delivered)


async def test_a_service_account_google_does_not_know_is_a_configuration_fault(
    sandbox: PushSandbox, fcm: FcmProvider
) -> None:
    sandbox.fcm.accounts.clear()
    assert await fcm.send(target(sandbox), CALL) == Misconfigured(
        "token endpoint 400: no access token"
    )
    assert sandbox.fcm.inbox.pushes == []


async def test_a_project_without_settings_is_a_configuration_fault(fcm: FcmProvider) -> None:
    unknown = PushTarget(ProviderName.FCM, "unknown-project", "t")
    assert isinstance(await fcm.send(unknown, CALL), Misconfigured)


async def test_the_stand_in_refuses_non_string_data_and_bad_ttl(
    sandbox: PushSandbox, fcm: FcmProvider
) -> None:
    import ssl

    import httpx

    assert isinstance(await fcm.send(target(sandbox), CALL), Delivered)
    project = fcm._projects[sandbox.project_id]
    ca = ssl.create_default_context(cafile=sandbox.certificate.cert_file)
    url = f"{sandbox.fcm_url}/v1/projects/{sandbox.project_id}/messages:send"
    headers = {"authorization": f"Bearer {project.access_token}"}
    async with httpx.AsyncClient(http2=True, verify=ca) as client:
        for message in (
            {"token": "t", "data": {"n": 1}},
            {"token": "t", "android": {"ttl": "10"}},
            {"token": "t", "topic": "news"},
            {"token": "t", "data": {"x": "a" * 4100}},
        ):
            answer = await client.post(url, json={"message": message}, headers=headers)
            assert answer.status_code == 400
            assert answer.json()["error"]["status"] == "INVALID_ARGUMENT"
        answer = await client.post(
            url, json={"message": {"token": "t"}}, headers={"authorization": "Bearer x"}
        )
        assert answer.status_code == 401


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"error": {"status": "INVALID_ARGUMENT"}}, Rejected("FCM 400 INVALID_ARGUMENT")),
        (
            401,
            {
                "error": {
                    "status": "UNAUTHENTICATED",
                    "details": [{"@type": "x.FcmError", "errorCode": "THIRD_PARTY_AUTH_ERROR"}],
                }
            },
            Misconfigured("FCM 401 THIRD_PARTY_AUTH_ERROR"),
        ),
        (500, {"error": {"status": "INTERNAL"}}, RetryAfter("FCM 500 INTERNAL")),
        (404, {}, TokenDead("FCM 404 error")),
    ],
)
def test_fcm_answers_are_sorted_by_what_to_do_next(
    status: int, body: dict[str, object], expected: object
) -> None:
    assert interpret(status, {}, json.dumps(body).encode(), 0.0) == expected


def test_a_bad_service_account_file_names_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({"project_id": "p"}))
    with pytest.raises(
        PushConfigError, match="lacks client_email, private_key_id, private_key, token_uri"
    ):
        ServiceAccount.load(path)
    with pytest.raises(PushConfigError, match="cannot read"):
        FcmProvider(
            [FcmAppSettings(service_account_file=tmp_path / "missing.json")],
            FakeClock(),
            timeout_s=1,
        )
