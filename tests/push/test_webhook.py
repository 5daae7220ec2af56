"""Webhook (UnifiedPush) pushes: the JSON body, dead endpoints, and no request to private hosts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ringfence.push.provider import (
    Delivered,
    Notification,
    ProviderName,
    PushKind,
    PushTarget,
    Rejected,
    RetryAfter,
    TokenDead,
)
from ringfence.push.webhook import WebhookProvider
from ringfence.sandbox.server import serve_tls
from tests.support.clock import FakeClock

MESSAGE = Notification(PushKind.MESSAGE, "m-1", ttl_s=60)


class Endpoint:
    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []

    async def answer(self, request: Request) -> Response:
        body = await request.body()
        self.received.append((dict(request.headers), body))
        status = int(request.path_params["status"])
        headers = {"retry-after": "3"} if status == 429 else {}
        return Response(status_code=status, headers=headers)


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[str, Endpoint]]:
    handler = Endpoint()
    app = Starlette(routes=[Route("/up/{status:int}", handler.answer, methods=["POST"])])
    async with serve_tls(app, None) as url:
        yield url, handler


def to(url: str) -> PushTarget:
    return PushTarget(ProviderName.WEBHOOK, "", url)


async def test_a_push_is_posted_as_json_with_its_ttl(endpoint: tuple[str, Endpoint]) -> None:
    url, handler = endpoint
    provider = WebhookProvider(FakeClock(), timeout_s=5, allow_private=True)
    assert isinstance(await provider.send(to(f"{url}/up/201"), MESSAGE), Delivered)
    headers, body = handler.received[-1]
    assert json.loads(body) == {"type": "message", "id": "m-1"}
    assert headers["ttl"] == "60"
    assert headers["content-type"] == "application/json"
    assert await provider.send(to(f"{url}/up/404"), MESSAGE) == TokenDead("webhook 404")
    assert await provider.send(to(f"{url}/up/410"), MESSAGE) == TokenDead("webhook 410")
    assert await provider.send(to(f"{url}/up/429"), MESSAGE) == RetryAfter("webhook 429", 3.0)
    assert await provider.send(to(f"{url}/up/400"), MESSAGE) == Rejected("webhook 400")
    # A redirect is not followed: it could lead anywhere.
    assert await provider.send(to(f"{url}/up/307"), MESSAGE) == Rejected("webhook 307")
    await provider.aclose()


async def test_device_supplied_endpoints_must_be_https_to_public_addresses(
    endpoint: tuple[str, Endpoint],
) -> None:
    url, handler = endpoint
    provider = WebhookProvider(FakeClock(), timeout_s=5)
    https_loopback = url.replace("http://", "https://") + "/up/200"
    for bad, why in [
        (f"{url}/up/200", "endpoint is not an https URL"),
        (https_loopback, "endpoint is not a public address"),
        ("https://10.1.2.3/up", "endpoint is not a public address"),
        ("https://[::1]/up", "endpoint is not a public address"),
        ("https://user:pw@push.example/up", "endpoint URL carries credentials"),
        ("ftp://push.example/up", "endpoint is not an https URL"),
        ("https://" + "a" * 2100, "endpoint URL too long"),
    ]:
        assert await provider.send(to(bad), MESSAGE) == TokenDead(why), bad
    assert handler.received == []
    await provider.aclose()
