"""Log lines for people (text) or for log search (JSON, one object per line), with the request's trace id.

The trace id travels in a context variable: the request handler sets it once, and every line logged
while that request (or shadow work it started) runs carries it, without threading it through calls."""

from __future__ import annotations

import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import Any

import orjson

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"

trace_id: ContextVar[str | None] = ContextVar("gearshift_trace_id", default=None)

# Fields a caller may pass with `extra={...}` that a log search wants as their own keys.
REQUEST_FIELDS = ("router", "model", "client", "status", "latency_ms", "method", "path", "endpoint", "cost_usd",
                  "config", "reason")
# A last guard, whatever a message holds: bearer tokens and provider-style keys are masked. Our own
# messages never hold secrets; an upstream's or a library's text might.
_SECRET = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}|\b(sk|pk|rk)-[A-Za-z0-9_-]{8,}")


def mask(text: str) -> str:
    """The text with anything shaped like a bearer token or an API key replaced by `***`."""
    return _SECRET.sub(lambda m: (m.group(1) or f"{m.group(2)}-") + "***", text)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: timestamp (UTC, ISO 8601), level, logger, message, pid, trace_id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": mask(record.getMessage()),
            "pid": record.process,
        }
        tid = getattr(record, "trace_id", None) or trace_id.get()
        if tid:
            out["trace_id"] = tid
        for key in REQUEST_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exception"] = mask(self.formatException(record.exc_info))
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """The plain format, with the trace id appended when a request is being handled."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = mask(super().format(record))
        tid = getattr(record, "trace_id", None) or trace_id.get()
        return f"{line} [trace {tid}]" if tid and tid not in line else line


def current() -> tuple[str, str]:
    """(level, format) of the root logger as `configure` set it, for a child process to log alike."""
    root = logging.getLogger()
    fmt = "json" if any(isinstance(h.formatter, JSONFormatter) for h in root.handlers) else "text"
    return logging.getLevelName(root.level), fmt


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Send every log line to stderr in `fmt` ("text" or "json"), replacing earlier handlers."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: use one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
