"""An access log that records no personal data and no secrets.

It logs the route *template* (`/admin/v1/tenants/{code}/accounts/{username}`), never the
path as sent (it names accounts) nor the query string (Acrobits' GET provisioning carries the
password there), nor any header. Enough to see load, errors and latency per endpoint.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("ringfence.access")


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Durations only: a relative clock, not the time of day (the log record has that).
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "(no route)"
            logger.info(
                "%s %s %d %.1fms",
                scope["method"],
                template,
                status,
                (time.perf_counter() - start) * 1000,
            )
