"""OTLP/HTTP export request bodies → `opentelemetry-proto` messages, in either encoding: binary protobuf, or
the OTLP JSON encoding (lowerCamelCase keys, 64-bit integers as strings, trace and span ids as hex). A
body that is neither raises `OtlpError` (400 `invalid_payload`). The mapping onto servers, samples and
log records is `sources.otlp`."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from openmanager.core.errors import OpenManagerError

__all__ = ["JSON_TYPES", "PROTOBUF_TYPES", "OtlpError", "decode_logs", "decode_metrics"]

JSON_TYPES = ("application/json",)
PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")


class OtlpError(OpenManagerError):
    """A payload that cannot be read (400 `invalid_payload`)."""

    code = "invalid_payload"


def _hex_ids_to_base64(records: Iterable[Any]) -> None:
    """The OTLP JSON encoding writes trace and span ids as hex; protobuf's JSON reader wants base64."""
    for rec in records:
        if not isinstance(rec, dict):
            continue
        for key in ("traceId", "spanId", "trace_id", "span_id"):
            value = rec.get(key)
            if isinstance(value, str) and value:
                try:
                    rec[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise OtlpError(f"{key} must be hex") from None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _decode(body: bytes, content_type: str, message: Any) -> Any:
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in JSON_TYPES:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise OtlpError(f"the body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise OtlpError("the body must be a JSON object")
        if isinstance(message, ExportLogsServiceRequest):
            for rl in _list(data.get("resourceLogs", data.get("resource_logs"))):
                for sl in _list(rl.get("scopeLogs", rl.get("scope_logs")) if isinstance(rl, dict) else None):
                    if isinstance(sl, dict):
                        _hex_ids_to_base64(_list(sl.get("logRecords", sl.get("log_records"))))
        try:
            json_format.ParseDict(data, message, ignore_unknown_fields=True)
        except (json_format.ParseError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
            raise OtlpError(f"not an OTLP JSON payload: {exc}") from None
        return message
    if kind in PROTOBUF_TYPES:
        try:
            message.ParseFromString(body)
        except (DecodeError, RuntimeWarning) as exc:
            raise OtlpError(f"not an OTLP protobuf payload: {exc}") from None
        return message
    raise OtlpError(f"unsupported Content-Type {content_type!r}: use application/x-protobuf or application/json")


def decode_metrics(body: bytes, content_type: str) -> ExportMetricsServiceRequest:
    """Raises OtlpError."""
    result: ExportMetricsServiceRequest = _decode(body, content_type, ExportMetricsServiceRequest())
    return result


def decode_logs(body: bytes, content_type: str) -> ExportLogsServiceRequest:
    """Raises OtlpError."""
    result: ExportLogsServiceRequest = _decode(body, content_type, ExportLogsServiceRequest())
    return result
