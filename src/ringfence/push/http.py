"""What the HTTP adapters share: one client per origin, Retry-After, error translation."""

from __future__ import annotations

import email.utils
import ssl
from pathlib import Path
from typing import Any

import httpx

from ringfence.push.errors import PushConfigError
from ringfence.push.provider import RetryAfter

#: A retry sooner than this is pointless, later than this is past any call's ring window.
MIN_RETRY_S = 0.0
MAX_RETRY_S = 3600.0


def http2_client(
    *,
    timeout_s: float,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    cert_key_file: Path | None = None,
) -> httpx.AsyncClient:
    """An HTTP/2 client with one pooled connection per origin (Apple asks for few, kept open).

    Raises:
        PushConfigError: a trust anchor or the client certificate cannot be loaded.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if ca_file is not None:
            context.load_verify_locations(cafile=ca_file)
        if cert_file is not None:
            context.load_cert_chain(cert_file, cert_key_file)
    except OSError as exc:  # ssl.SSLError is an OSError
        raise PushConfigError(f"cannot load TLS material: {exc}") from exc
    return httpx.AsyncClient(
        http2=True,
        verify=context,
        timeout=timeout_s,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        follow_redirects=False,
        headers={"user-agent": "ringfence"},
    )


async def post(client: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    """`client.post(url, ...)`, without the reference cycle httpx leaves in each response.

    An httpx 0.28 response and the stream bound to it refer to each other, so every answer
    waits for the cyclic garbage collector; at 200 pushes a second the young collections
    each freed some 5,000 objects and paused the event loop 3-10 ms, which showed in the
    99th percentile of INVITE-to-push latency (`make bench-push`). The body is read in full
    here, so the stream is of no more use: dropping it leaves nothing cyclic behind.
    """
    response = await client.post(url, **kwargs)
    await response.aread()
    response.stream = httpx.ByteStream(b"")
    return response


def retry_after_s(value: str | None, now: float) -> float | None:
    """The delay a Retry-After header asks for (RFC 9110 §10.2.3): seconds or an HTTP-date.

    Returns None when the header is absent or unreadable (the caller backs off on its own).
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now
    return min(max(seconds, MIN_RETRY_S), MAX_RETRY_S)


def network_failure(exc: httpx.HTTPError) -> RetryAfter:
    """A request that got no answer: retry. Only the class is kept, the text may quote URLs."""
    return RetryAfter(f"no answer: {type(exc).__name__}")
