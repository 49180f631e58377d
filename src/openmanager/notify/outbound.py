"""The outbound guard at the edge: every HTTP request a channel sends goes through `OutboundGuard.client()`.

How it stops server-side request forgery, including DNS rebinding: the guard is an httpcore *network
backend*, the one place where httpx opens a TCP connection. For every new connection it

1. judges the URL's host as written (`OutboundPolicy.check_host`: address literals in any spelling,
   `localhost`, metadata names);
2. resolves a name ONCE (`getaddrinfo`, or the resolver a test gives) and judges every address;
3. connects to the checked addresses only, by address, in the resolver's order.

The name is never resolved again for that connection, so a DNS answer that changes between the check
and the connect (rebinding) cannot move the connection anywhere unchecked. TLS is unaffected: httpcore
still sends the URL's host name as SNI and verifies the certificate against it, and the `Host` header
comes from the URL. Redirects are never followed, and the process's proxy variables are ignored
(`trust_env=False`): a proxy would connect on our behalf to addresses the guard never saw.

A refusal raises `OutboundRefused` before any packet is sent to the refused address; `post` in
`channels._http` turns it into a permanent delivery failure whose reason is the category only
(`"refused: private address"`).
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from openmanager.core.errors import OpenManagerError
from openmanager.core.netguard import OutboundPolicy, parse_host_address

__all__ = ["OutboundGuard", "OutboundRefused", "Resolver", "system_resolver"]

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""`(host, port) → addresses` (strings, in the order to try them); raises OSError when the name does not
resolve."""


class OutboundRefused(OpenManagerError):
    """The guard refused a destination; `reason` is the category (`"private address"`), never the address."""

    code = "outbound_refused"

    def __init__(self, reason: str) -> None:
        super().__init__(f"refused: {reason}")
        self.reason = reason


async def system_resolver(host: str, port: int) -> list[str]:
    """The system resolver, off the event loop (`loop.getaddrinfo` runs in the default executor)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves, checks and connects by address (see the module doc)."""

    def __init__(self, policy: OutboundPolicy, resolver: Resolver, backend: httpcore.AsyncNetworkBackend) -> None:
        self._policy = policy
        self._resolver = resolver
        self._backend = backend

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        reason = self._policy.check_host(host)
        if reason is not None:
            raise OutboundRefused(reason)
        literal = parse_host_address(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = await self._resolver(host, port)
            except OSError:
                raise httpcore.ConnectError("the name does not resolve") from None
        allowed = [a for a in addresses if self._policy.check_address(a) is None]
        if not allowed:
            if not addresses:
                raise httpcore.ConnectError("the name does not resolve")
            raise OutboundRefused(self._policy.check_address(addresses[0]) or "invalid host name")
        failure: Exception | None = None
        for address in allowed:  # only ever an address that passed the check
            try:
                return await self._backend.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                       socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused("unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request/response mapping, exception translation) over a connection pool
    whose network backend is the guard. httpx 0.28 takes no backend argument, so the pool it builds is
    replaced; a layout change in httpx fails here, loudly, rather than leaving requests unguarded."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError("httpx.AsyncHTTPTransport changed: the outbound guard cannot be installed")
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend)


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """What httpx trusts by default: certifi's CAs, or the files SSL_CERT_FILE / SSL_CERT_DIR name (read
    once per process; loading the bundle takes a while)."""
    return httpx.create_ssl_context()


class OutboundGuard:
    """The policy (`OutboundPolicy`, from the `outbound_allow` setting) and the clients that obey it.

    `resolver`, `backend` and `ssl_context` are for tests: a resolver that returns the address under
    test, a backend that records connection attempts instead of making them, a context that trusts a
    test CA (by default: certifi's CAs, or the files SSL_CERT_FILE / SSL_CERT_DIR name)."""

    def __init__(self, policy: OutboundPolicy | None = None, *, resolver: Resolver = system_resolver,
                 backend: httpcore.AsyncNetworkBackend | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.policy = policy or OutboundPolicy()
        self._resolver = resolver
        self._backend = backend or httpcore.AnyIOBackend()
        self._ssl_context = ssl_context

    @classmethod
    def allowing(cls, *cidrs: str, **kwargs: Any) -> OutboundGuard:
        """A guard whose allow-list is `cidrs` (raises ValueError for one that is not a CIDR block)."""
        return cls(OutboundPolicy.from_strings(cidrs), **kwargs)

    def client(self, timeout: float) -> httpx.AsyncClient:
        """A new client whose every connection is checked; never follows redirects, ignores proxy
        variables. The caller closes it."""
        transport = _GuardedTransport(_GuardedBackend(self.policy, self._resolver, self._backend),
                                      self._ssl_context or _default_ssl_context())
        return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)

    def check_url(self, url: str) -> str | None:
        """The verdict on a URL when it is saved, before any resolution: None, or why it is refused
        (`"loopback address"`, `"invalid host name"`, ...). Names that resolve to a refused address are
        refused later, when the hub connects."""
        try:
            host = httpx.URL(url).host
        except (httpx.InvalidURL, TypeError):
            return "invalid URL"
        return self.policy.check_host(host) if host else "invalid URL"
