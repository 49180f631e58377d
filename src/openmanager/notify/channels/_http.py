"""What the HTTP channels (`webhook`, `webpush`) share: one bounded POST through the outbound guard whose
failures become `DeliveryError`s that name only the destination's origin and a category, and the
`Retry-After` header of a 429/503 answer."""

from __future__ import annotations

import asyncio
import email.utils
import math
import time

import httpx

from openmanager.notify.message import DeliveryError
from openmanager.notify.outbound import OutboundRefused

__all__ = ["MAX_RETRY_AFTER_S", "parse_retry_after", "post"]

MAX_RETRY_AFTER_S = 3600
"""A `Retry-After` further out than this is waited for only this long (then the retry limit applies)."""


async def post(client: httpx.AsyncClient, url: str, *, content: bytes, headers: dict[str, str], timeout: float,
               where: str) -> httpx.Response:
    """POST `content` to `url` without following redirects; the response body is never read (the
    response is closed before it is returned). `timeout` bounds the whole attempt (resolve, connect, send,
    response headers). `where` (e.g. `"webhook https://host"`) prefixes every error, followed by one of:

    - `refused: <category>` (`private address`, ...): the outbound guard refused the destination before
      connecting; permanent;
    - `timed out`, `connection failed`: retryable. Which transport error it was (refused, reset, not
      HTTP, name not resolved) is deliberately not told: that would map the target's ports.

    Anything else (such as `httpx.InvalidURL`) propagates."""
    try:
        async with asyncio.timeout(timeout):
            request = client.build_request("POST", url, content=content, headers=headers)
            response = await client.send(request, stream=True, follow_redirects=False)
            await response.aclose()
    except OutboundRefused as exc:
        raise DeliveryError(f"{where}: {exc.message}", retryable=False) from None
    except (TimeoutError, httpx.TimeoutException):
        raise DeliveryError(f"{where}: timed out") from None
    except httpx.TransportError:
        raise DeliveryError(f"{where}: connection failed") from None
    return response


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value (RFC 9110 §10.2.3): delay-seconds (`"120"`) or an
    HTTP-date, relative to `now` (unix seconds; default the clock). Clamped to 0..`MAX_RETRY_AFTER_S`;
    None for a missing or malformed value."""
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    if text.isascii() and text.isdigit():
        return float(min(int(text), MAX_RETRY_AFTER_S))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        return None
    delay = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(delay):
        return None
    return min(max(delay, 0.0), float(MAX_RETRY_AFTER_S))
