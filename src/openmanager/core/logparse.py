"""Parse one log line into a `LogRecord`. Pure: no I/O, no clock (the caller passes `now_ms`).
Over 500 lines on purpose: the formats are tried in one order and share the level and timestamp
readers, so the order and the fallbacks are read in one place.

Formats recognised, tried in this order:
- **JSON lines**: an object per line. `ts`/`time`/`timestamp`/`@timestamp` (ISO-8601, or epoch seconds,
  milliseconds, microseconds or nanoseconds, as a number or a numeric string), `level`/`severity`/
  `levelname`/`lvl` (a name, or a number: 0-7 syslog severities, 10-60 pino/bunyan levels),
  `msg`/`message`/`log`, `service`/`app`/`application`/`logger`/`logger_name`; every other key becomes a field.
- **RFC 5424 syslog**: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG`; structured data becomes the
  field `sd` (`{sd-id: {param: value}}`).
- **RFC 3164 syslog** (classic files such as /var/log/syslog): `[<PRI>]Nov 26 14:05:06 host app[123]: msg`,
  also with an RFC 3339 timestamp instead (rsyslog's high-precision format). The year, which the line
  does not carry, is the one that puts the time closest to `now_ms` (a December line read in January
  belongs to last year).
- **logfmt**: `ts=... level=warn msg="..." key=value`.
- **Common/combined access log** (nginx, Apache): status 5xx is ERROR, 4xx WARN, else INFO.
- **Plain text**: an optional leading timestamp (`2024-11-26 14:05:06,123`, `[2024-11-26T14:05:06Z]`,
  `2024/11/26 14:05:06`), then the level guessed from a leading word (any case: `error: ...`) or a
  bracketed/upper-case word among the first three (`[WARN]`, `ERROR`, `<crit>`); INFO otherwise.

Levels: syslog PRI gives the level (emerg/alert/crit → CRITICAL, err → ERROR, warning → WARN,
notice/info → INFO, debug → DEBUG); without a PRI the syslog message's leading word is used as in
plain text. Timestamps without a zone are read in `tz` (None: the system's local time, as syslog
writes them). A timestamp that cannot be read, or is not after 1970, leaves `now_ms`.

Bounds: a line longer than `MAX_LINE_BYTES` (UTF-8) is cut to that length and the record gets the field
`truncated: true` (as does a line the caller already cut, `truncated=True`). Field values are made
JSON-safe (nesting deeper than `MAX_FIELD_DEPTH` becomes its text). Invalid UTF-8 is replaced, NUL
characters are dropped. `parse_line` never raises on any input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Final

import orjson

from openmanager.core.model import LogLevel, LogRecord

__all__ = ["MAX_FIELD_DEPTH", "MAX_LINE_BYTES", "guess_level", "parse_level", "parse_line", "parse_timestamp"]

MAX_LINE_BYTES: Final = 16 * 1024
MAX_FIELD_DEPTH: Final = 8
_MAX_TS_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_BYTES: Final = re.compile(r"[0-9]{1,18}")

_JSON_TS_KEYS: Final = ("ts", "time", "timestamp", "@timestamp")
_JSON_LEVEL_KEYS: Final = ("level", "severity", "levelname", "lvl", "loglevel")
_JSON_MSG_KEYS: Final = ("msg", "message", "log")
_JSON_SERVICE_KEYS: Final = ("service", "app", "application", "logger", "logger_name")

_LEVEL_WORDS: Final[Mapping[str, LogLevel]] = {
    "TRACE": LogLevel.DEBUG,
    "DEBUG": LogLevel.DEBUG,
    "DBG": LogLevel.DEBUG,
    "INFO": LogLevel.INFO,
    "INF": LogLevel.INFO,
    "NOTICE": LogLevel.INFO,
    "WARN": LogLevel.WARN,
    "WARNING": LogLevel.WARN,
    "WRN": LogLevel.WARN,
    "ERROR": LogLevel.ERROR,
    "ERR": LogLevel.ERROR,
    "SEVERE": LogLevel.ERROR,
    "CRIT": LogLevel.CRITICAL,
    "CRITICAL": LogLevel.CRITICAL,
    "FATAL": LogLevel.CRITICAL,
    "PANIC": LogLevel.CRITICAL,
    "EMERG": LogLevel.CRITICAL,
    "EMERGENCY": LogLevel.CRITICAL,
    "ALERT": LogLevel.CRITICAL,
}
_SYSLOG_SEVERITY: Final = (
    LogLevel.CRITICAL,  # 0 emerg
    LogLevel.CRITICAL,  # 1 alert
    LogLevel.CRITICAL,  # 2 crit
    LogLevel.ERROR,  # 3 err
    LogLevel.WARN,  # 4 warning
    LogLevel.INFO,  # 5 notice
    LogLevel.INFO,  # 6 info
    LogLevel.DEBUG,  # 7 debug
)
_FACILITIES: Final = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
    "ntp", "security", "console", "solaris-cron", "local0", "local1", "local2", "local3", "local4", "local5",
    "local6", "local7",
)
_MONTHS: Final[Mapping[str, int]] = {
    m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))
}

_ISO_RE: Final = re.compile(
    r"(?P<y>\d{4})[-/](?P<mo>\d{2})[-/](?P<d>\d{2})(?:[T ](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2}))?"
    r"(?:[.,](?P<f>\d{1,9}))?)?\s?(?P<z>Z|z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?"
)
_NUMERIC_RE: Final = re.compile(r"[+-]?\d+(?:\.\d+)?")
_PRI_RE: Final = re.compile(r"<(\d{1,3})>")
_RFC5424_RE: Final = re.compile(
    r"<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<pid>\S+) (?P<msgid>\S+) ?(?P<rest>.*)", re.S
)
_BSD_TS_RE: Final = re.compile(
    r"(?P<mon>[A-Za-z]{3}) {1,2}(?P<d>\d{1,2}) (?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})(?:\.(?P<f>\d{1,9}))? "
)
_RFC3339_TS_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2}) ")
_HOST_TAG_RE: Final = re.compile(
    r"(?P<host>[^\s:\[\]]+) (?:(?P<tag>[^\s:\[\]]{1,64})(?:\[(?P<pid>[^\]\s]{1,32})\])?: ?)?"
)
_TAG_ONLY_RE: Final = re.compile(r"(?P<tag>[^\s:\[\]]{1,64})(?:\[(?P<pid>[^\]\s]{1,32})\])?: ?")
_SD_ELEMENT_RE: Final = re.compile(r'\[(?P<id>[^\s\]="]+)(?P<params>(?: [^\s\]="]+="(?:[^"\\]|\\.)*")*)\]')
_SD_PARAM_RE: Final = re.compile(r'([^\s\]="]+)="((?:[^"\\]|\\.)*)"')
_LOGFMT_RE: Final = re.compile(r'([A-Za-z_@][\w.@/-]*)=(?:"((?:[^"\\]|\\.)*)"|(\S*))')
_CLF_RE: Final = re.compile(
    r'(?P<remote>\S+) \S+ (?P<user>\S+) \[(?P<ts>[^\]]+)\] "(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\S+)'
    r'(?: "(?P<referer>[^"]*)" "(?P<agent>[^"]*)")?'
)
_CLF_TS_RE: Final = re.compile(
    r"(?P<d>\d{2})/(?P<mon>[A-Za-z]{3})/(?P<y>\d{4}):(?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2}) (?P<z>[+-]\d{4})"
)
_LEADING_TS_RE: Final = re.compile(r"\[?(?P<ts>\d{4}[-/]\d{2}[-/]\d{2}[T ]\d{2}:\d{2}(?::\d{2})?[^\s\]]*)\]?\s*")
_TOKEN_SPLIT_RE: Final = re.compile(r"[\s:|]+")
_TOKEN_STRIP: Final = "[]()<>{},;-=*#"


# -- public helpers -----------------------------------------------------------------------------------


def parse_level(value: object) -> LogLevel | None:
    """A level from a name (any case, common aliases) or a number (0-7: syslog severity; otherwise the
    pino/bunyan scale 10 trace … 60 fatal). None when it is not recognisable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value):
            return None
        n = int(value)
        if 0 <= n <= 7:
            return _SYSLOG_SEVERITY[n]
        if n <= 0:
            return None
        if n < 30:
            return LogLevel.DEBUG
        if n < 40:
            return LogLevel.INFO
        if n < 50:
            return LogLevel.WARN
        if n < 60:
            return LogLevel.ERROR
        return LogLevel.CRITICAL
    if isinstance(value, str):
        text = value.strip()
        if _NUMERIC_RE.fullmatch(text):
            return parse_level(float(text))
        return _LEVEL_WORDS.get(text.upper())
    return None


def guess_level(text: str) -> LogLevel | None:
    """The level named by a line's leading word (any case) or by a bracketed or upper-case word among
    its first three words; None when there is none."""
    tokens = _TOKEN_SPLIT_RE.split(text[:128].lstrip(), maxsplit=3)[:3]
    for i, token in enumerate(tokens):
        word = token.strip(_TOKEN_STRIP)
        if not word:
            continue
        level = _LEVEL_WORDS.get(word.upper())
        if level is None:
            continue
        bracketed = token[:1] in "[(<{" or token[-1:] in "])>}"
        if i == 0 or bracketed or word.isupper():
            return level
    return None


def parse_timestamp(value: object, *, tz: tzinfo | None = None) -> int | None:
    """Milliseconds since the epoch from an ISO-8601 text or an epoch number (seconds, milliseconds,
    microseconds or nanoseconds, told apart by magnitude). Texts without a zone are read in `tz`
    (None: local time). None when it is not a timestamp after 1970 and before 10000."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if _NUMERIC_RE.fullmatch(text):
            return parse_timestamp(float(text), tz=tz)
        m = _ISO_RE.fullmatch(text)
        if m is None:
            return None
        return _iso_ms(m, tz)
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            return None
        magnitude = abs(value)
        if magnitude < 1e11:
            ms = value * 1000.0
        elif magnitude < 1e14:
            ms = float(value)
        elif magnitude < 1e17:
            ms = value / 1000.0
        else:
            ms = value / 1_000_000.0
        return _valid_ms(round(ms))
    return None


def parse_line(
    line: bytes | str,
    *,
    now_ms: int,
    server: str,
    service: str = "",
    tz: tzinfo | None = None,
    truncated: bool = False,
) -> LogRecord:
    """One line (without or with its line ending) as a record of `server`. `service` is used when the
    line names none; `now_ms` when it carries no readable timestamp. Never raises."""
    try:
        text, cut = _decode(line)
        return _parse(text, now_ms=now_ms, server=server, service=service, tz=tz, truncated=truncated or cut)
    except Exception:  # a parser bug must not lose the line
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else str(line)
        fields: dict[str, object] = {"truncated": True} if truncated or len(text) > MAX_LINE_BYTES else {}
        return LogRecord(now_ms, server, LogLevel.INFO, service, text[:MAX_LINE_BYTES].replace("\0", ""), fields)


# -- implementation -----------------------------------------------------------------------------------


def _decode(line: bytes | str) -> tuple[str, bool]:
    raw = line.encode("utf-8", "replace") if isinstance(line, str) else line
    cut = len(raw) > MAX_LINE_BYTES
    if cut:
        raw = raw[:MAX_LINE_BYTES]
    text = raw.decode("utf-8", "replace")
    if cut:  # the cut may split the last character
        text = text.rstrip("\ufffd")
    return text.rstrip("\r\n").replace("\0", ""), cut


def _parse(text: str, *, now_ms: int, server: str, service: str, tz: tzinfo | None, truncated: bool) -> LogRecord:
    stripped = text.strip()
    rec: LogRecord | None = None
    if stripped.startswith("{") and stripped.endswith("}"):
        rec = _parse_json(stripped, now_ms, server, service, tz)
    elif stripped.startswith("<"):
        rec = _parse_syslog(stripped, now_ms, server, service, tz)
    if rec is None and stripped[:1].isalnum():
        rec = _parse_bsd(stripped, None, now_ms, server, service, tz) or _parse_clf(stripped, now_ms, server, service)
    if rec is None and "=" in stripped:
        rec = _parse_logfmt(stripped, now_ms, server, service, tz)
    if rec is None:
        rec = _parse_text(stripped, now_ms, server, service, tz)
    if truncated:
        rec.fields["truncated"] = True
    return rec


def _valid_ms(ms: int) -> int | None:
    return ms if 0 < ms <= _MAX_TS_MS else None


def _zone(z: str | None, tz: tzinfo | None) -> tzinfo | None:
    if z is None:
        return tz
    if z in ("Z", "z", "UTC", "GMT"):
        return UTC
    sign = -1 if z[0] == "-" else 1
    digits = z[1:].replace(":", "")
    hours = int(digits[:2])
    minutes = int(digits[2:4]) if len(digits) >= 4 else 0
    if hours > 23 or minutes > 59:
        raise ValueError("bad zone offset")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _to_ms(dt: datetime) -> int | None:
    """Epoch ms of `dt`; a naive datetime is local time."""
    try:
        return _valid_ms(round(dt.timestamp() * 1000))
    except (OverflowError, OSError, ValueError):
        return None


def _iso_ms(m: re.Match[str], tz: tzinfo | None) -> int | None:
    try:
        frac = (m["f"] or "0")[:6].ljust(6, "0")
        dt = datetime(
            int(m["y"]), int(m["mo"]), int(m["d"]), int(m["h"] or 0), int(m["mi"] or 0), int(m["s"] or 0), int(frac),
            tzinfo=_zone(m["z"], tz),
        )
    except ValueError:
        return None
    return _to_ms(dt)


def _json_safe(value: object, depth: int = 0) -> object:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= MAX_FIELD_DEPTH:
        return orjson.dumps(value, default=str).decode() if isinstance(value, dict | list) else str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v, depth + 1) for v in value]
    return str(value)


def _first(obj: dict[str, object], keys: tuple[str, ...]) -> tuple[str | None, object]:
    for key in keys:
        if key in obj and obj[key] is not None:
            return key, obj[key]
    return None, None


def _parse_json(text: str, now_ms: int, server: str, service: str, tz: tzinfo | None) -> LogRecord | None:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    return _parse_json_obj(obj, text, now_ms, server, service, tz)


def _pri(value: str, fields: dict[str, object]) -> LogLevel | None:
    pri = int(value)
    if pri > 191:
        return None
    fields["facility"] = _FACILITIES[pri >> 3]
    return _SYSLOG_SEVERITY[pri & 7]


def _parse_syslog(text: str, now_ms: int, server: str, service: str, tz: tzinfo | None) -> LogRecord | None:
    m = _RFC5424_RE.match(text)
    if m is not None:
        return _parse_5424(m, now_ms, server, service, tz)
    p = _PRI_RE.match(text)
    if p is None:
        return None
    fields: dict[str, object] = {}
    level = _pri(p[1], fields)
    if level is None:
        return None
    rest = text[p.end():]
    rec = _parse_bsd(rest, level, now_ms, server, service, tz)
    if rec is None:  # a PRI and then anything: the rest is the message
        rec = LogRecord(now_ms, server, level, service, rest.strip(), {})
    rec.fields.update(fields)
    return rec


def _nil(value: str) -> str | None:
    return None if value == "-" else value


def _parse_5424(m: re.Match[str], now_ms: int, server: str, service: str, tz: tzinfo | None) -> LogRecord | None:
    fields: dict[str, object] = {}
    level = _pri(m["pri"], fields)
    if level is None:
        return None
    ts = parse_timestamp(m["ts"], tz=tz) if m["ts"] != "-" else None
    host, app, pid, msgid = _nil(m["host"]), _nil(m["app"]), _nil(m["pid"]), _nil(m["msgid"])
    if host:
        fields["host"] = host
    if pid:
        fields["pid"] = pid
    if msgid:
        fields["msgid"] = msgid
    rest = m["rest"]
    if rest.startswith("-"):
        rest = rest[1:]
    elif rest.startswith("["):
        sd: dict[str, object] = {}
        pos = 0
        while True:
            el = _SD_ELEMENT_RE.match(rest, pos)
            if el is None:
                break
            sd[el["id"]] = {
                k: re.sub(r"\\([\"\\\]])", r"\1", v) for k, v in _SD_PARAM_RE.findall(el["params"])
            }
            pos = el.end()
        if sd:
            fields["sd"] = sd
        rest = rest[pos:]
    message = rest.removeprefix(" ").removeprefix("\ufeff")
    return LogRecord(ts or now_ms, server, level, app or service, message, fields)


def _bsd_year_ms(mon: int, day: int, h: int, mi: int, s: int, us: int, now_ms: int, tz: tzinfo | None) -> int | None:
    """The time of a year-less syslog stamp: of this, last and next year, the latest at most a day ahead of now."""
    now = datetime.fromtimestamp(now_ms / 1000, tz) if tz is not None else datetime.fromtimestamp(now_ms / 1000)
    best: int | None = None
    for year in (now.year - 1, now.year, now.year + 1):
        try:
            dt = datetime(year, mon, day, h, mi, s, us, tzinfo=tz)
        except ValueError:  # Feb 29 in a year without it, day 31 of a short month
            continue
        ms = _to_ms(dt)
        if ms is not None and ms <= now_ms + 86_400_000 and (best is None or ms > best):
            best = ms
    return best


def _parse_bsd(
    text: str, level: LogLevel | None, now_ms: int, server: str, service: str, tz: tzinfo | None
) -> LogRecord | None:
    """RFC 3164 after the PRI: `Mmm dd hh:mm:ss host tag[pid]: msg` (host or tag may be missing), or with
    an RFC 3339 stamp — then `host tag[pid]:` is required, so a plain line that merely starts with a
    timestamp is left to the text parser."""
    ts: int | None
    m = _BSD_TS_RE.match(text)
    strict = m is None
    if m is not None:
        mon = _MONTHS.get(m["mon"].lower())
        if mon is None:
            return None
        us = int((m["f"] or "0")[:6].ljust(6, "0"))
        ts = _bsd_year_ms(mon, int(m["d"]), int(m["h"]), int(m["mi"]), int(m["s"]), us, now_ms, tz)
        end = m.end()
    else:
        r = _RFC3339_TS_RE.match(text)
        if r is None:
            return None
        ts = parse_timestamp(r[0].strip(), tz=tz)
        end = r.end()
    rest = text[end:]
    fields: dict[str, object] = {}
    tag: str | None = None
    pid: str | None = None
    message = rest
    h = _HOST_TAG_RE.match(rest)
    if h is not None and h["tag"] is not None and not _is_level_tag(h["tag"], h["pid"]):
        fields["host"] = h["host"]
        tag, pid, message = h["tag"], h["pid"], rest[h.end():]
    elif strict:
        return None
    else:
        t = _TAG_ONLY_RE.match(rest)
        if t is not None and not _is_level_tag(t["tag"], t["pid"]):  # no host: some local writers omit it
            tag, pid, message = t["tag"], t["pid"], rest[t.end():]
        elif h is not None:
            fields["host"] = h["host"]
            message = rest[h.end():]
    if pid:
        fields["pid"] = pid
    if level is None:
        level = guess_level(message) or LogLevel.INFO
    return LogRecord(ts or now_ms, server, level, tag or service, message, fields)


def _is_level_tag(tag: str, pid: str | None) -> bool:
    """`ERROR:` where a tag would be is the message's level word, not a program name."""
    return pid is None and tag.upper() in _LEVEL_WORDS


def _parse_clf(text: str, now_ms: int, server: str, service: str) -> LogRecord | None:
    m = _CLF_RE.match(text)
    if m is None:
        return None
    ts: int | None = None
    t = _CLF_TS_RE.fullmatch(m["ts"])
    if t is not None:
        mon = _MONTHS.get(t["mon"].lower())
        if mon is not None:
            try:
                dt = datetime(int(t["y"]), mon, int(t["d"]), int(t["h"]), int(t["mi"]), int(t["s"]),
                              tzinfo=_zone(t["z"], None))
                ts = _to_ms(dt)
            except ValueError:
                ts = None
    status = int(m["status"])
    level = LogLevel.ERROR if status >= 500 else LogLevel.WARN if status >= 400 else LogLevel.INFO
    fields: dict[str, object] = {"remote": m["remote"], "request": m["request"], "status": status}
    if _BYTES.fullmatch(m["bytes"]):  # ASCII digits within int64 (`isdigit()` takes "²" too)
        fields["bytes"] = int(m["bytes"])
    if m["user"] != "-":
        fields["user"] = m["user"]
    if m["referer"] is not None:
        fields["referer"] = m["referer"]
        fields["agent"] = m["agent"]
    return LogRecord(ts or now_ms, server, level, service, text, fields)


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda e: {"n": "\n", "t": "\t"}.get(e[1], e[1]), value)


def _parse_logfmt(text: str, now_ms: int, server: str, service: str, tz: tzinfo | None) -> LogRecord | None:
    """Only lines that are nothing but key=value pairs, with at least a level or a message key."""
    pairs: dict[str, str] = {}
    pos = 0
    n = len(text)
    while pos < n:
        m = _LOGFMT_RE.match(text, pos)
        if m is None:
            return None
        pairs[m[1]] = _unescape(m[2]) if m[2] is not None else m[3]
        pos = m.end()
        while pos < n and text[pos] == " ":
            pos += 1
    if len(pairs) < 2 or not any(k in pairs for k in (*_JSON_LEVEL_KEYS, *_JSON_MSG_KEYS)):
        return None
    obj: dict[str, object] = dict(pairs)
    rec = _parse_json_obj(obj, text, now_ms, server, service, tz)
    return rec


def _parse_json_obj(
    obj: dict[str, object], text: str, now_ms: int, server: str, service: str, tz: tzinfo | None
) -> LogRecord:
    used: set[str] = set()
    ts_key, ts_raw = _first(obj, _JSON_TS_KEYS)
    ts = parse_timestamp(ts_raw, tz=tz) if ts_key is not None else None
    if ts is not None and ts_key is not None:
        used.add(ts_key)
    level_key, level_raw = _first(obj, _JSON_LEVEL_KEYS)
    level = parse_level(level_raw) if level_key is not None else None
    if level is not None and level_key is not None:
        used.add(level_key)
    msg_key, msg_raw = _first(obj, _JSON_MSG_KEYS)
    if msg_key is not None and isinstance(msg_raw, str):
        used.add(msg_key)
        message = msg_raw.rstrip("\r\n")
    else:
        message = text
    svc_key, svc_raw = _first(obj, _JSON_SERVICE_KEYS)
    if svc_key is not None and isinstance(svc_raw, str) and svc_raw:
        used.add(svc_key)
        service = svc_raw
    if level is None:
        level = guess_level(message) or LogLevel.INFO
    fields = {str(k): _json_safe(v, 1) for k, v in obj.items() if k not in used}
    return LogRecord(ts or now_ms, server, level, service, message, fields)


def _parse_text(text: str, now_ms: int, server: str, service: str, tz: tzinfo | None) -> LogRecord:
    ts: int | None = None
    message = text
    m = _LEADING_TS_RE.match(text)
    if m is not None:
        ts = parse_timestamp(m["ts"], tz=tz)
        if ts is not None:
            message = text[m.end():]
    level = guess_level(message) or LogLevel.INFO
    return LogRecord(ts or now_ms, server, level, service, message, {})
