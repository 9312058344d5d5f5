"""Logging: stdlib ``logging``, one logger per module, the call SID and leg on every line.

Audio payloads and secrets are never passed to a logger anywhere in the bridge; as a second
line of defence, every line the bridge's handler writes has the configured secrets' values
masked (a library's exception text or traceback may echo a key or a URL with a password).

What people said (transcripts, the caller's spoken menu answer) is personal data: it goes to
the call store, not to logs. Only ``LOG_SPEECH=on`` (for debugging) lets the speech loggers
write it, at DEBUG; otherwise they are switched off whatever ``LOG_LEVEL`` says.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
TRANSCRIPT_LOGGER = "bridge.calls.transcript"
# The language menu's answer as heard (Twilio's SpeechResult): speech, like the transcript.
MENU_SPEECH_LOGGER = "bridge.telephony.language_menu.heard"
SPEECH_LOGGERS = (TRANSCRIPT_LOGGER, MENU_SPEECH_LOGGER)
# Shorter values are not masked: they would mangle ordinary words, and no real key is so short.
MIN_REDACTED_CHARS = 8
REDACTED = "[redacted]"


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


class RedactingFormatter(logging.Formatter):
    """Formats with ``inner``, then masks every known secret value in the whole output
    (message, arguments and traceback alike). The set only grows: several apps in one process
    (tests) each add theirs."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner
        self._secrets: tuple[str, ...] = ()

    def add_secrets(self, secrets: Iterable[str]) -> None:
        known = set(self._secrets) | {s for s in secrets if len(s) >= MIN_REDACTED_CHARS}
        # Longest first: a secret containing another is masked whole.
        self._secrets = tuple(sorted(known, key=len, reverse=True))

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


def call_logger(name: str, call_sid: str, part: str) -> CallLogger:
    return CallLogger(logging.getLogger(name), {"call": call_sid, "part": part})


def log_transcript(call_sid: str, direction: str, kind: str, text: str, offset_ms: int) -> None:
    """One structured (JSON) line per transcript fragment, at DEBUG and only with
    ``LOG_SPEECH=on`` (the logger is off otherwise): what people said is not for logs."""
    logger = logging.getLogger(TRANSCRIPT_LOGGER)
    if not logger.isEnabledFor(logging.DEBUG):
        return  # not even the JSON is built
    logger.debug(
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


def configure_logging(
    level: str,
    fmt: str = "text",
    *,
    secrets: Iterable[str] = (),
    log_speech: bool = False,
) -> None:
    """Send the bridge's logs to stderr (gunicorn passes them through) at ``level``, as text
    or as JSON lines, with phone numbers and ``secrets`` masked. ``log_speech`` (LOG_SPEECH,
    for debugging only) lets the speech loggers write what people said, at DEBUG."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_bridge", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        inner = JsonFormatter() if fmt == "json" else logging.Formatter(_FORMAT)
        handler.setFormatter(RedactingFormatter(inner))
        handler.addFilter(MaskingFilter())
        handler._bridge = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    if isinstance(handler.formatter, RedactingFormatter):
        handler.formatter.add_secrets(secrets)
    root.setLevel(level)
    for name in SPEECH_LOGGERS:
        # Their own level, not the root's: LOG_LEVEL=DEBUG alone must not log speech.
        logging.getLogger(name).setLevel(logging.DEBUG if log_speech else logging.CRITICAL + 1)
    # Third-party loggers that would print URLs with tokens, or frame dumps, at INFO/DEBUG.
    for noisy in ("websockets", "openai", "httpx", "httpx2", "twilio", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
