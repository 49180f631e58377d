"""The Apprise channel: a notification to each of a user's Apprise URLs (Slack, Discord, Telegram,
Microsoft Teams, Matrix, ntfy, Gotify, Pushover, PagerDuty, Opsgenie, generic `json://` / `form://` ...),
through the Apprise library (https://github.com/caronc/apprise, BSD-2-Clause).

Wire contract:

- each URL gets the title and body; Apprise's notification type follows the severity (critical →
  failure, warning → warning, info → info; a resolution → success);
- the notification id, the idempotency key, goes out as the `X-OpenManager-Delivery` and
  `Idempotency-Key` headers on the generic `json://`, `form://` and `xml://` services (Apprise's
  `+Header=value` parameters); the other providers' APIs have no place for it;
- every connection Apprise makes for a delivery goes through the outbound guard: Apprise sends with
  `requests`/urllib3, whose `create_connection` is wrapped once per process so that, inside a delivery
  (a context variable that Apprise carries into its worker threads), the host is resolved once, every
  address judged by the `outbound_allow` policy, and only an address that passed is connected to
  (redirects are new connections, judged again). requests would send through `HTTP_PROXY`/`HTTPS_PROXY`,
  where the guard cannot see the destination, so with a proxy variable set an Apprise delivery fails
  at once instead, naming it (webhooks and Web Push ignore those variables). Outside a delivery the
  wrapper does nothing. A refused destination is a permanent failure
  (`apprise json://127.0.0.1:8080: refused: loopback address`);
- Apprise reports success or failure, not the HTTP status, and has no hook that passes a response on.
  So, like the connection, requests' `HTTPAdapter.send` is wrapped once per process: inside a delivery
  it notes each response's status and `Retry-After` (outside one it does nothing). A failure is
  retryable; when an answer was a 429 or 503 with a `Retry-After` (seconds or an HTTP-date, at most an
  hour), the failure carries it and the next attempt waits at least that long, else the usual
  exponential backoff with jitter applies. Its detail is Apprise's own log line with secrets masked (and
  `HTTP 429, retry after 30 s` when there was one). When some URLs of a user succeed and others fail,
  the delivery is `sent` with the failures in its detail and not retried (a retry would repeat the
  message to the others).

URLs are secrets (they hold tokens): never logged or shown; details name only the service and, for
self-hosted services, `scheme://host:port`.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib.util
import logging
import socket
import threading
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

from openmanager.core.netguard import OutboundPolicy, parse_host_address
from openmanager.notify.channels._http import parse_retry_after
from openmanager.notify.message import DeliveryError, Message
from openmanager.notify.outbound import OutboundGuard

__all__ = ["SELF_HOSTED", "SERVICES", "AppriseChannel", "backoff_asked", "check_apprise_url", "service_of"]

log = logging.getLogger("openmanager.notify.apprise")

MAX_URLS = 10
MAX_URL = 2048
SEND_TIMEOUT_S = 30.0
SERVICES: Mapping[str, str] = {
    "slack": "Slack", "discord": "Discord", "tgram": "Telegram", "workflow": "Microsoft Teams (Workflows)",
    "workflows": "Microsoft Teams (Workflows)", "matrix": "Matrix", "matrixs": "Matrix", "ntfy": "ntfy",
    "ntfys": "ntfy", "gotify": "Gotify", "gotifys": "Gotify", "pover": "Pushover", "pagerduty": "PagerDuty",
    "opsgenie": "Opsgenie", "json": "JSON (generic)", "jsons": "JSON (generic)", "form": "Form (generic)",
    "forms": "Form (generic)", "xml": "XML (generic)", "xmls": "XML (generic)", "mmost": "Mattermost",
    "mmosts": "Mattermost", "rocket": "Rocket.Chat", "rockets": "Rocket.Chat", "pbul": "Pushbullet",
    "zulip": "Zulip", "gchat": "Google Chat", "ncloud": "Nextcloud Talk", "nclouds": "Nextcloud Talk",
    "apprise": "Apprise API", "apprises": "Apprise API", "signal": "Signal API", "signals": "Signal API",
    "webex": "Webex", "wxteams": "Webex", "dingtalk": "DingTalk", "line": "LINE", "mastodon": "Mastodon",
    "toot": "Mastodon",
}
"""The Apprise services offered: HTTP APIs only, so the outbound guard sees every connection (Apprise's
email, MQTT, syslog, desktop and other non-HTTP services are refused when saved)."""
SELF_HOSTED = frozenset({
    "json", "jsons", "form", "forms", "xml", "xmls", "ntfy", "ntfys", "gotify", "gotifys", "matrix", "matrixs",
    "mmost", "mmosts", "rocket", "rockets", "ncloud", "nclouds", "apprise", "apprises", "signal", "signals",
    "mastodon", "toot",
})
"""Services whose URL may name the server to connect to (judged by the guard when saved, and shown in
details); the others connect to their provider's fixed public API."""
_HEADER_SERVICES = frozenset({"json", "jsons", "form", "forms", "xml", "xmls"})
# Per delivery, in the delivery's context (Apprise runs each service in its executor with a copy of the
# caller's context, so these reach its threads): the guard's policy, and lists the delivery collects.
_POLICY: contextvars.ContextVar[OutboundPolicy | None] = contextvars.ContextVar("apprise_policy", default=None)
_REFUSED: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("apprise_refused", default=None)
_LINES: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("apprise_lines", default=None)
_ANSWERS: contextvars.ContextVar[list[tuple[int, str | None]] | None] = contextvars.ContextVar(
    "apprise_answers", default=None)  # (status, Retry-After) of each HTTP response of the delivery
MAX_ANSWERS = 20
LIMITED_STATUS = frozenset({429, 503})


_module: Any = None
_module_lock = threading.Lock()


def _apprise() -> Any:
    """The apprise module with its plugins loaded, once, on first use (~1 s: kept off the hub's start and,
    through `AppriseChannel.ready`, off the event loop). Loading them warns about the stdlib `imghdr` that
    Apprise shims: not ours to fix, and not to be repeated per delivery."""
    global _module
    with _module_lock:
        if _module is None:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                import apprise

                apprise.Apprise().details()  # loads every plugin now
            _module = apprise
    return _module


def service_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def _origin(url: str) -> str:
    """What a detail may name: the service, plus `host:port` for a self-hosted one."""
    service = service_of(url)
    if service not in SELF_HOSTED:
        return service
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        return f"{service}://{host}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return service


def check_apprise_url(url: str, policy: OutboundPolicy) -> str | None:
    """None when `url` is an Apprise URL the hub can use and whose self-hosted host the guard does not
    refuse as written; otherwise why not."""
    apprise = _apprise()
    if not isinstance(url, str) or not url.strip() or len(url) > MAX_URL or "://" not in url:
        return "not an Apprise URL (service://...)"
    if service_of(url) not in SERVICES:
        return (f"the {service_of(url) or 'unknown'} service is not offered (HTTP services only: "
                f"{', '.join(sorted(SERVICES))})")
    if apprise.Apprise.instantiate(url, suppress_exceptions=True) is None:
        return f"not a URL Apprise understands for the {service_of(url) or 'unknown'} service"
    if service_of(url) in SELF_HOSTED:
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:
            return "invalid host"
        if host:
            reason = policy.check_host(host)
            if reason is not None:
                return f"refused: {reason}"
    return None


_original_create_connection: Any = None
_original_adapter_send: Any = None
_install_lock = threading.Lock()


def _observed_adapter_send(adapter: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
    """requests' `HTTPAdapter.send`, noting the answer's status and `Retry-After` inside a delivery."""
    response = _original_adapter_send(adapter, request, *args, **kwargs)
    answers = _ANSWERS.get()
    if answers is not None and len(answers) < MAX_ANSWERS:
        answers.append((int(response.status_code), response.headers.get("Retry-After")))
    return response


def _guarded_create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
    policy = _POLICY.get()
    if policy is None:
        plain: socket.socket = _original_create_connection(address, *args, **kwargs)  # not an Apprise delivery
        return plain
    host, port = address
    reason = policy.check_host(host)
    if reason is None:
        literal = parse_host_address(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            addresses = list(dict.fromkeys(str(info[4][0]) for info in socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM)))
        allowed = [a for a in addresses if policy.check_address(a) is None]
        if allowed:
            failure: OSError | None = None
            for addr in allowed:  # only ever an address that passed
                try:
                    sock: socket.socket = _original_create_connection((addr, port), *args, **kwargs)
                    return sock
                except OSError as exc:
                    failure = exc
            assert failure is not None
            raise failure
        reason = policy.check_address(addresses[0]) if addresses else "the name does not resolve"
    refused = _REFUSED.get()
    if refused is not None:
        refused.append(reason or "refused")
    raise ConnectionRefusedError(f"refused by the outbound guard: {reason}")


def _install() -> None:
    """Wrap urllib3's `create_connection` and requests' `HTTPAdapter.send` once (see the module doc)."""
    global _original_create_connection, _original_adapter_send
    import requests.adapters
    import urllib3.util.connection as connection

    with _install_lock:
        if _original_create_connection is None:
            _original_create_connection = connection.create_connection
            connection.create_connection = _guarded_create_connection
            _original_adapter_send = requests.adapters.HTTPAdapter.send
            requests.adapters.HTTPAdapter.send = _observed_adapter_send  # type: ignore[method-assign,assignment]
            logging.getLogger("apprise").addHandler(_DeliveryLog())


class _DeliveryLog(logging.Handler):
    """Apprise's warnings and errors, into the list of the delivery whose context logs them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        lines = _LINES.get()
        if lines is not None and len(lines) < 5:
            lines.append(record.getMessage()[:300])


class AppriseChannel:
    name = "apprise"

    def __init__(self, guard: OutboundGuard, *, timeout: float = SEND_TIMEOUT_S) -> None:
        if importlib.util.find_spec("apprise") is None:  # the channel is then off
            raise ModuleNotFoundError("the apprise package is not installed")
        _install()
        self.guard = guard
        self.timeout = timeout

    async def ready(self) -> None:
        """Load Apprise in a worker thread (the first time only) so `check_url` does not block the loop."""
        await asyncio.to_thread(_apprise)

    def check_url(self, url: str) -> str | None:
        return check_apprise_url(url, self.guard.policy)

    async def send(self, message: Message, target: Mapping[str, Any]) -> str:
        urls = target.get("urls") or []
        if not isinstance(urls, list) or not urls:
            raise DeliveryError("no Apprise URL set", retryable=False)
        results = await asyncio.gather(*(self._one(message, str(u)) for u in urls[:MAX_URLS]))
        sent = [origin for origin, error in results if error is None]
        failed = [(origin, error) for origin, error in results if error is not None]
        if sent:
            detail = f"{len(sent)} of {len(results)} sent ({', '.join(sent)})"
            if failed:
                detail += "; " + "; ".join(f"{o}: {e.message}" for o, e in failed)
            return detail
        waits = [e.retry_after_s for _, e in failed if e.retryable and e.retry_after_s is not None]
        raise DeliveryError("; ".join(f"apprise {o}: {e.message}" for o, e in failed),
                            retryable=any(e.retryable for _, e in failed), retry_after_s=max(waits, default=None))

    async def _one(self, message: Message, url: str) -> tuple[str, DeliveryError | None]:
        origin = _origin(url)
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.to_thread(self._send_blocking, message, url)
        except DeliveryError as exc:
            return origin, exc
        except TimeoutError:
            return origin, DeliveryError("timed out")
        return origin, None

    def _send_blocking(self, message: Message, url: str) -> None:
        proxies = sorted(k for k in urllib.request.getproxies() if k != "no")
        if proxies:
            raise DeliveryError(f"a proxy is set for {', '.join(proxies)} (HTTP(S)_PROXY): Apprise would send "
                                f"through it, where the outbound guard cannot see", retryable=False)
        apprise = _apprise()
        if service_of(url) in _HEADER_SERVICES:
            key = quote(message.id, safe="")
            url += ("&" if "?" in url else "?") + f"+X-OpenManager-Delivery={key}&+Idempotency-Key={key}"
        transition = (message.data.get("transition") if isinstance(message.data, Mapping) else None)
        kind = {"critical": apprise.NotifyType.FAILURE, "warning": apprise.NotifyType.WARNING}.get(
            message.severity, apprise.NotifyType.INFO)
        if transition == "resolved":
            kind = apprise.NotifyType.SUCCESS
        body = message.body + (f"\n{message.url}" if message.url else "")
        notifier = apprise.Apprise(asset=apprise.AppriseAsset(async_mode=False))
        if not notifier.add(url):
            raise DeliveryError(f"not a URL Apprise understands for the {service_of(url)} service", retryable=False)
        lines: list[str] = []
        refused: list[str] = []
        answers: list[tuple[int, str | None]] = []
        # this thread's context (asyncio.to_thread runs us in a copy): they end with the call
        _POLICY.set(self.guard.policy)
        _REFUSED.set(refused)
        _LINES.set(lines)
        _ANSWERS.set(answers)
        ok = notifier.notify(title=message.title, body=body, notify_type=kind)
        if refused:
            raise DeliveryError(f"refused: {refused[0]}", retryable=False)
        if not ok:
            detail = _masked(lines, url) or "the service did not accept it"
            status, retry_after = backoff_asked(answers)
            if status is not None:
                detail += f" (HTTP {status}" + (f", retry after {retry_after:g} s)" if retry_after is not None
                                                 else ")")
            raise DeliveryError(detail, retry_after_s=retry_after)


def backoff_asked(answers: Sequence[tuple[int, str | None]]) -> tuple[int | None, float | None]:
    """The last 429/503 among a delivery's answers and the wait its `Retry-After` asks for (None: no such
    answer, or no readable `Retry-After`)."""
    limited = [(status, header) for status, header in answers if status in LIMITED_STATUS]
    if not limited:
        return None, None
    status, header = limited[-1]
    return status, parse_retry_after(header)


def _masked(lines: Sequence[str], url: str) -> str:
    """Apprise's failure lines without anything of the URL but its origin."""
    secret_parts = [p for p in url.split("://", 1)[-1].replace("?", "/").replace("&", "/").split("/") if len(p) > 3]
    out = []
    for line in lines:
        for part in secret_parts:
            line = line.replace(part, "…")
        out.append(line)
    return " | ".join(out)[:500]
