"""Structured logs (issue #11): one JSON object a line, or plain text for a person at a terminal.

Every object has `time`, `level`, `logger` and `event`; a call site adds facts with `extra=` (topic,
partition, offsets, counts). Two guards sit on the one handler, so no call site can forget them:

- secrets (the settings' `SecretStr` values, and the password part of any URL) are masked at every
  level, whatever a library prints;
- an exception is written as its type and stack frames, never its message, at INFO and above: a
  message may quote the data that failed (a member id, an amount). At DEBUG the message is kept.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<secret>[^@/\s]+)@")
MASK = "***"


class Redactor:
    """Masks known secret values and URL passwords in a text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return _URL_PASSWORD.sub(rf"\g<scheme>\g<user>:{MASK}@", text)


def _exception(record: logging.LogRecord, keep_message: bool) -> dict[str, Any]:
    assert record.exc_info and record.exc_info[0] is not None
    kind, value, tb = record.exc_info
    frames = [f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_tb(tb)][-12:]
    out: dict[str, Any] = {"error": kind.__name__, "stack": frames}
    if keep_message:
        out["error_message"] = str(value)
    return out


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": self.redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = self.redact(value) if isinstance(value, str) else value
        if record.exc_info and record.exc_info[0] is not None:
            line.update(_exception(record, record.levelno < logging.INFO))
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        exc_info, record.exc_info, record.exc_text = record.exc_info, None, None
        try:
            text = self.redact(super().format(record))
        finally:
            record.exc_info = exc_info
        facts = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
        if facts:
            text += " " + " ".join(f"{k}={v}" for k, v in facts.items())
        if exc_info and exc_info[0] is not None:
            error = _exception(record, record.levelno < logging.INFO)
            text += f" [{error['error']}] " + " < ".join(reversed(error["stack"]))
            if "error_message" in error:
                text += f": {self.redact(error['error_message'])}"
        return text


def setup_logging(level: str, form: str, secrets: Iterable[str] = ()) -> None:
    """Replace the root handlers with one stderr handler of the chosen format (idempotent)."""
    redact = Redactor(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if form == "json" else TextFormatter(redact))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "aiokafka", "faststream"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("aiokafka").setLevel(max(logging.getLevelName(level), logging.WARNING))
