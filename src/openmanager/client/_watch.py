"""`openmanager watch`: a live stream of one topic in the terminal, one line per server update or log
record on stdout, connection state changes on stderr."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

import orjson

from openmanager.client._errors import ClientError, ConnectError, HubError
from openmanager.client._hub import HubClient
from openmanager.client._streams import LogRecord, LogStream, MetricsStream, ServerUpdate
from openmanager.client._types import ConnectionState, Event, Reset, Snapshot

WATCH_TOPICS = ("metrics", "logs", "alerts", "fleet", "system")
TOKEN_FILE = Path("data") / "admin_token"

_COLOURS = {
    "healthy": "32", "warning": "33", "critical": "31", "offline": "90", "maintenance": "36",
    "DEBUG": "90", "INFO": "0", "WARN": "33", "ERROR": "31", "CRITICAL": "1;31",
    "info": "36", "resolved": "32",
}


def resolve_token(token: str | None, token_file: Path = TOKEN_FILE) -> str | None:
    """`--token` / `OPENMANAGER_TOKEN` if given, else the token the hub keeps in ./data/admin_token."""
    if token:
        return token.strip()
    with contextlib.suppress(OSError):
        text = token_file.read_text().strip()
        if text:
            return text
    return None


def _clock(ts_ms: object) -> str:
    if not isinstance(ts_ms, int | float) or ts_ms <= 0:
        return "--:--:--.---"
    return dt.datetime.fromtimestamp(ts_ms / 1000).strftime("%H:%M:%S.%f")[:-3]


def _num(sample: dict[str, Any], key: str, fmt: str) -> str | None:
    value = sample.get(key)
    return fmt.format(value) if isinstance(value, int | float) else None


def format_update(update: ServerUpdate) -> str:
    s = update.sample
    parts = [f"{_clock(update.ts)}  {update.server:<14} {s.get('status', '?')!s:<11}"]
    for label, key, fmt in (("cpu", "cpu", "{:5.1f}%"), ("mem", "memory", "{:5.1f}%"), ("disk", "disk", "{:5.1f}%"),
                            ("load", "load1", "{:5.2f}"), ("rt", "response_time", "{:.0f} ms"),
                            ("err", "error_rate", "{:.2f}%")):
        text = _num(s, key, fmt)
        if text is not None:
            parts.append(f"{label} {text}")
    return "  ".join(parts)


def format_record(record: LogRecord) -> str:
    return (f"{_clock(record.get('ts'))}  {record.get('server', '?')!s:<14} {record.get('level', '?')!s:<8} "
            f"{record.get('service', '?')}: {record.get('message', '')}")


def format_alert(data: dict[str, Any]) -> str:
    """One `alerts` transition: time, transition, severity, rule, server(s), value, and why it did not
    notify when it did not."""
    alert = data.get("alert") or {}
    rule = alert.get("rule") or {}
    where = ",".join(alert["servers"]) if alert.get("servers") else str(alert.get("server", "?"))
    value = alert.get("value")
    shown = f"{value:g}" if isinstance(value, int | float) else str(value)
    note = "notified" if data.get("notify") else f"not notified: {data.get('reason', '?')}"
    return (f"{_clock(data.get('ts'))}  {str(data.get('transition', '?')).upper():<12} "
            f"{alert.get('severity', '?')!s:<8} {rule.get('id', '?')!s:<22} {where:<14} value={shown}  ({note})")


def format_fleet(data: dict[str, Any]) -> str:
    """One `fleet` summary: counts by status and the fleet's average cpu, memory and disk."""
    avg = data.get("avg") or {}
    counts = "  ".join(f"{key} {data.get(key, 0)}" for key in ("healthy", "warning", "critical", "offline",
                                                                  "maintenance"))
    means = "  ".join(f"{label} {text}" for label, key in (("cpu", "cpu"), ("mem", "memory"), ("disk", "disk"))
                      if (text := _num(avg, key, "{:.1f}%")) is not None)
    return f"{_clock(data.get('ts'))}  {data.get('total', 0)} servers  {counts}" + (f"  avg {means}" if means else "")


def format_system(data: dict[str, Any]) -> str:
    """One `system` event: connections, message and byte rates, compression, drops, ingest, fan-out p99."""
    conns = data.get("connections") or {}
    parts = [f"{_clock(data.get('ts'))}  ws {conns.get('ws', 0)}  sse {conns.get('sse', 0)}"]
    for label, key, fmt in (("msg/s", "messages_per_s", "{:.1f}"), ("B/s", "bytes_per_s", "{:.0f}"),
                            ("compression", "compression_ratio", "x{:.2f}"), ("drops", "drops", "{}"),
                            ("ingest/s", "ingest_per_s", "{:.1f}"), ("fan-out p99 ms", "fanout_p99_ms", "{:.2f}")):
        text = _num(data, key, fmt)
        if text is not None:
            parts.append(f"{label} {text}")
    if data.get("node"):
        parts.append(f"node {data['node']}" + (" (leader)" if data.get("leader") else ""))
    return "  ".join(parts)


def format_json(topic: str, kind: str, data: Any) -> str:
    """`--json`: one object per line, `{"topic", "type": "snapshot" | "event", "data"}`."""
    return orjson.dumps({"topic": topic, "type": kind, "data": data}).decode()


def format_state(state: ConnectionState) -> str:
    if state.state == "reconnecting":
        delay = f"{state.next_delay_s:.2f}" if state.next_delay_s is not None else "?"
        return f"[reconnecting] attempt {state.attempt + 1} in {delay}s ({state.reason})"
    return f"[{state.state}]" + (f" {state.reason}" if state.reason else "")


class _Printer:
    def __init__(self, out: TextIO, err: TextIO, colour: bool) -> None:
        self.out = out
        self.err = err
        self.colour = colour

    def line(self, text: str, key: str | None = None) -> None:
        code = _COLOURS.get(key or "") if self.colour else None
        self.out.write(f"\x1b[{code}m{text}\x1b[0m\n" if code else text + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()


async def run_watch(topic: str, *, url: str, token: str, where: str | None = None, servers: str | None = None,
                    level: str | None = None, contains: str | None = None, as_json: bool = False,
                    out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Stream `topic` until SIGINT/SIGTERM (exit status 0) or the client closes for good (1): readable
    lines, or with `as_json` one JSON object per snapshot or event (`format_json`).
    Status 1 when the hub cannot be reached or rejects the token, 2 for a filter the hub refuses."""
    out = out or sys.stdout
    err = err or sys.stderr
    printer = _Printer(out, err, colour=out.isatty() and not as_json)
    client = HubClient(url, token=token)
    client.on_state(lambda s: printer.note(format_state(s)))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await client.connect()
        except ConnectError as exc:
            printer.note(f"error: {exc.message}")
            return 1
        try:
            await _subscribe(client, printer, topic, where=where, servers=servers, level=level, contains=contains,
                             as_json=as_json)
        except HubError as exc:
            printer.note(f"error: the hub refused the subscription: {exc}")
            return 2
        except ClientError as exc:
            printer.note(f"error: {exc.message}")
            return 1
        stopped = asyncio.ensure_future(stop.wait())
        closed = asyncio.ensure_future(client.wait_for_state("closed"))
        await asyncio.wait({stopped, closed}, return_when=asyncio.FIRST_COMPLETED)
        for fut in (stopped, closed):
            fut.cancel()
        await asyncio.wait({stopped, closed})
        return 0 if stop.is_set() else 1
    finally:
        await client.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


async def _subscribe(client: HubClient, printer: _Printer, topic: str, *, where: str | None, servers: str | None,
                     level: str | None, contains: str | None, as_json: bool = False) -> None:
    def on_reset(reset: Reset) -> None:
        printer.note(f"[reset] {reset.topic}: {reset.reason}; events between {reset.since} and "
                     f"{reset.cursor} may be missing")

    flt: dict[str, Any] = {}
    if as_json:
        if topic == "metrics":
            flt = {k: v for k, v in (("where", where), ("servers", servers)) if v}
        elif topic == "logs":
            flt = {k: v for k, v in (("servers", servers), ("level", level), ("contains", contains)) if v}
        elif topic == "alerts":
            flt = {k: v for k, v in (("servers", servers), ("severity", level.lower() if level else None)) if v}

        def show_json(message: Event | Snapshot) -> None:
            printer.line(format_json(topic, "snapshot" if isinstance(message, Snapshot) else "event", message.data))

        await client.subscribe(topic, filter=flt or None, on_event=show_json, on_snapshot=show_json,
                               on_reset=on_reset)
        return
    if topic == "metrics":
        metrics = MetricsStream.on(client)
        metrics.subscribe(where=where, servers=servers, on_reset=on_reset,
                          callback=lambda u: printer.line(format_update(u), str(u.sample.get("status"))))
        await metrics.connect()
    elif topic == "logs":
        logs = LogStream.on(client, level=level, servers=servers, contains=contains)
        logs.on_log(lambda r: printer.line(format_record(r), str(r.get("level"))))
        logs.on_reset(on_reset)
        await logs.connect()
    elif topic == "alerts":
        if servers:
            flt["servers"] = servers
        if level:
            flt["severity"] = level.lower()

        def show_alert(message: Event | Snapshot) -> None:
            if isinstance(message, Snapshot):
                for alert in message.data.get("alerts", []):
                    printer.line(format_alert({"transition": alert.get("state"), "alert": alert,
                                               "ts": alert.get("fired_at") or alert.get("started_at"),
                                               "notify": alert.get("notified", True)}), str(alert.get("severity")))
                return
            colour = "resolved" if message.data.get("transition") == "resolved" else message.data["alert"]["severity"]
            printer.line(format_alert(message.data), str(colour))

        await client.subscribe(topic, filter=flt or None, on_event=show_alert, on_snapshot=show_alert,
                               on_reset=on_reset)
    else:
        formatter = format_fleet if topic == "fleet" else format_system

        def show(message: Event | Snapshot) -> None:
            if isinstance(message.data, dict):
                printer.line(formatter(message.data))

        await client.subscribe(topic, on_event=show, on_snapshot=show, on_reset=on_reset)
