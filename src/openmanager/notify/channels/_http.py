"""What the HTTP channels (`webhook`, `webpush`) share: one bounded POST whose transport failures become
retryable `DeliveryError`s naming only the destination's origin."""

from __future__ import annotations

import asyncio

import httpx

from openmanager.notify.message import DeliveryError

__all__ = ["post"]


async def post(client: httpx.AsyncClient, url: str, *, content: bytes, headers: dict[str, str], timeout: float,
               where: str) -> httpx.Response:
    """POST `content` to `url` without following redirects; the response body is never read (the
    response is closed before it is returned). `timeout` bounds the whole attempt (connect, send, response
    headers). A timeout raises `DeliveryError("<where>: timed out after <timeout> s")`, any other transport
    failure `DeliveryError("<where>: connection failed (<exception class>)")`, both retryable; `where` is
    e.g. `"webhook https://host"`. Anything else (such as `httpx.InvalidURL`) propagates."""
    try:
        async with asyncio.timeout(timeout):
            request = client.build_request("POST", url, content=content, headers=headers)
            response = await client.send(request, stream=True, follow_redirects=False)
            await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
        raise DeliveryError(f"{where}: timed out after {timeout:g} s") from None
    except httpx.TransportError as exc:
        raise DeliveryError(f"{where}: connection failed ({type(exc).__name__})") from None
    return response
