"""Logging: stdlib ``logging``, one logger per module, the call SID and leg on every line.

Audio payloads and secrets are never passed to a logger anywhere in the bridge.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
TRANSCRIPT_LOGGER = "bridge.calls.transcript"


class CallLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every message with ``call=<sid> <part>`` so one call's lines can be grepped,
    and puts both on the record for the JSON format."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        kwargs["extra"] = {"call": extra.get("call"), "part": extra.get("part")}
        return f"call={extra.get('call')} {extra.get('part')}: {msg}", kwargs


_PHONE = re.compile(r"\+\d{7,15}")


def mask_number(number: str) -> str:
    """``+15551234567`` → ``+1555•••••67``: enough to tell calls apart, not to dial."""
    return number[:5] + "•" * max(0, len(number) - 7) + number[-2:] if len(number) > 7 else "•••"


def mask_numbers(text: str) -> str:
    """Every E.164 number in ``text`` masked (for log lines, which must not hold them)."""
    return _PHONE.sub(lambda m: mask_number(m.group(0)), text)


class MaskingFilter(logging.Filter):
    """Masks phone numbers in every record's message (third-party lines included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_numbers(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line (LOG_FORMAT=json): time, level, logger, call, part, message."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("call", "part"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def call_logger(name: str, call_sid: str, part: str) -> CallLogger:
    return CallLogger(logging.getLogger(name), {"call": call_sid, "part": part})


def log_transcript(call_sid: str, direction: str, kind: str, text: str, offset_ms: int) -> None:
    """One structured (JSON) line per transcript fragment."""
    logging.getLogger(TRANSCRIPT_LOGGER).info(
        "%s",
        json.dumps(
            {
                "call": call_sid,
                "direction": direction,
                "kind": kind,
                "offset_ms": offset_ms,
                "text": text,
            },
            ensure_ascii=False,
        ),
    )


def configure_logging(level: str, fmt: str = "text") -> None:
    """Send the bridge's logs to stderr (gunicorn passes them through) at ``level``, as text
    or as JSON lines, with phone numbers masked."""
    root = logging.getLogger()
    if not any(getattr(h, "_bridge", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_FORMAT))
        handler.addFilter(MaskingFilter())
        handler._bridge = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # Third-party loggers that would print URLs with tokens, or frame dumps, at INFO/DEBUG.
    for noisy in ("websockets", "openai", "httpx", "httpx2", "twilio", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
