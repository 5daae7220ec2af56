"""Webhook push (UnifiedPush): POST the notification as JSON to the device's own endpoint.

The endpoint is a URL the device supplied, so posting to it is a server-side request on a
stranger's behalf: only https, and only to public addresses, unless the settings allow a lab
(`push.webhook_allow_private`). Redirects are not followed (they could point anywhere).
The name is resolved and checked before the request; a resolver that answers differently a
moment later (DNS rebinding) is not covered: deployments that fear it put an egress proxy in
front.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from urllib.parse import urlsplit

import httpx

from ringfence.clock import Clock
from ringfence.push.http import network_failure, post, retry_after_s
from ringfence.push.payload import PayloadTooLargeError, webhook_body
from ringfence.push.provider import (
    Delivered,
    Notification,
    ProviderName,
    PushResult,
    PushTarget,
    Rejected,
    RetryAfter,
    TokenDead,
)

logger = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048


class WebhookProvider:
    name = ProviderName.WEBHOOK

    def __init__(self, clock: Clock, *, timeout_s: float, allow_private: bool = False) -> None:
        self._clock = clock
        self._allow_private = allow_private
        self._client = httpx.AsyncClient(
            timeout=timeout_s,
            follow_redirects=False,
            headers={"user-agent": "ringfence"},
        )

    def serves(self, target: PushTarget) -> bool:
        return target.provider is ProviderName.WEBHOOK

    async def send(self, target: PushTarget, notification: Notification) -> PushResult:
        refusal = await self._check(target.token)
        if refusal is not None:
            return refusal
        try:
            body = webhook_body(notification)
        except PayloadTooLargeError as exc:
            return Rejected(str(exc))
        try:
            answer = await post(
                self._client,
                target.token,
                content=body,
                # RFC 8030 §5.2: how long the push service may keep it.
                headers={"content-type": "application/json", "ttl": str(notification.ttl_s)},
            )
        except httpx.HTTPError as exc:
            return network_failure(exc)
        status = answer.status_code
        if answer.is_success:
            return Delivered(provider_id=answer.headers.get("location"))
        reason = f"webhook {status}"
        logger.info("a webhook refused a push to %s: %d", target.fingerprint, status)
        if status in {404, 410}:
            # UnifiedPush and RFC 8030 §7.3: the subscription is gone.
            return TokenDead(reason)
        if status == 429 or status >= 500:
            return RetryAfter(reason, retry_after_s(answer.headers.get("retry-after"), self._now()))
        return Rejected(reason)

    async def _check(self, url: str) -> PushResult | None:
        """Why `url` may not be posted to now, or None when it may.

        An endpoint we will never post to is as good as a dead token; a name that does not
        resolve may resolve later.
        """
        if len(url) > MAX_URL_LENGTH:
            return TokenDead("endpoint URL too long")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return TokenDead("endpoint is not a URL")
        allowed = {"https", "http"} if self._allow_private else {"https"}
        if parts.scheme not in allowed or not parts.hostname:
            return TokenDead("endpoint is not an https URL")
        if parts.username or parts.password:
            return TokenDead("endpoint URL carries credentials")
        if self._allow_private:
            return None
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                parts.hostname, port or 443, type=socket.SOCK_STREAM
            )
        except OSError:
            return RetryAfter("endpoint host does not resolve")
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if not address.is_global:
                return TokenDead("endpoint is not a public address")
        return None

    def _now(self) -> float:
        return self._clock.now().timestamp()

    async def aclose(self) -> None:
        await self._client.aclose()
