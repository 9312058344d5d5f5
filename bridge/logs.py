"""Logging: stdlib ``logging``, one logger per module, the call SID and leg on every line.

Audio payloads and secrets are never passed to a logger anywhere in the bridge.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from typing import Any

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
TRANSCRIPT_LOGGER = "bridge.transcript"


class CallLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every message with ``call=<sid> <part>`` so one call's lines can be grepped."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        return f"call={extra.get('call')} {extra.get('part')}: {msg}", kwargs


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


def configure_logging(level: str) -> None:
    """Send the bridge's logs to stderr (gunicorn passes them through) at ``level``."""
    root = logging.getLogger()
    if not any(getattr(h, "_bridge", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._bridge = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # Third-party loggers that would print URLs with tokens, or frame dumps, at INFO/DEBUG.
    for noisy in ("websockets", "openai", "httpx", "httpx2", "twilio", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
