"""Sending text messages: verification codes to numbers of record (privacy.verification).

Providers reach phones through their own SMS gateway or aggregator, each with its own API;
ringfence speaks one plain HTTP contract that every such service can be fronted with (a
few lines of glue, or the gateway's own webhook mode):

    POST <[sms] url>
    Authorization: Bearer <[sms] token>        (when a token is set)
    Content-Type: application/json

    {"to": "+41445551234", "text": "...", "sender": "<[sms] sender>"}

Any 2xx answer means the gateway took the message; anything else, or no answer within the
timeout, is a refusal. Neither the number nor the text is ever logged.
"""

from __future__ import annotations

import httpx

from ringfence.config import SMSSettings
from ringfence.privacy.verification import TextError


class SMSGateway:
    """One HTTP client for the node's life: connections to the gateway are reused."""

    def __init__(self, settings: SMSSettings) -> None:
        if settings.url is None:
            raise ValueError("sms.url is not set")
        self._url = str(settings.url)
        self._sender = settings.sender
        headers = {"User-Agent": "ringfence"}
        if settings.token is not None:
            headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
        self._client = httpx.AsyncClient(headers=headers, timeout=settings.timeout_s)

    async def send_text(self, to: str, text: str) -> None:
        try:
            answer = await self._client.post(
                self._url, json={"to": to, "text": text, "sender": self._sender}
            )
        except httpx.HTTPError as exc:
            # The class only: the exception's text may quote the request.
            raise TextError(type(exc).__name__) from exc
        if not answer.is_success:
            raise TextError(f"HTTP {answer.status_code}")

    async def aclose(self) -> None:
        await self._client.aclose()
