"""Bland's Live Translation API wire format (``twilio_ulaw`` protocol): pure, no I/O.

The only module that knows Bland's JSON. Facts it encodes, from Bland's docs (Create / End
Translation Session, Live Translation tutorial):

* ``POST /v1/translation/sessions`` with header ``Authorization: <key>`` (no "Bearer") and a
  JSON body ``source_language``, ``target_language``, optional ``voice_id``, ``audio_protocol``
  (``pcm16`` | ``twilio_ulaw``), ``sample_rate`` (pcm16 only; never with twilio_ulaw),
  ``max_duration_seconds`` (30–1800). The answer is ``{"data": {session_id, ws_url, token,
  expires_at, max_duration_seconds}, "errors": null}``; a failure has ``errors`` (a list).
* ``DELETE /v1/translation/sessions/:id`` (optional body ``reason``, ≤ 200 chars) ends it; on an
  ended session it is a no-op returning the final state.
* On the socket, with ``twilio_ulaw`` every frame is JSON text in Twilio Media Streams shape,
  base64 8 kHz μ-law in ``media.payload``, both ways. Control events are JSON text too:
  ``ready``, ``transcript`` (``original``, ``translation``), ``tts_complete``,
  ``session_ended``, ``error``.

Inferred (the docs' full schemas were not available to us; the README says so): control events
carry their name in ``type`` while audio envelopes carry Twilio's ``event``; we open with
Twilio's ``connected`` and ``start`` messages and end with ``stop``, exactly as Twilio would.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

SESSIONS_PATH = "/v1/translation/sessions"
MAX_DURATION_S = 1800
MIN_DURATION_S = 30
MAX_REASON_CHARS = 200


class BlandProtocolError(ValueError):
    """A message or response that is not Bland's documented shape."""


# -- REST --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateSession:
    source_language: str
    target_language: str
    voice_id: str | None = None
    max_duration_s: int = MAX_DURATION_S

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "source_language": self.source_language,
            "target_language": self.target_language,
            "audio_protocol": "twilio_ulaw",  # no sample_rate: Twilio audio is always 8 kHz
            "max_duration_seconds": self.max_duration_s,
        }
        if self.voice_id:
            body["voice_id"] = self.voice_id
        return body


@dataclass(frozen=True, slots=True)
class CreatedSession:
    session_id: str
    ws_url: str  # a secret: never logged
    max_duration_s: int


def parse_created(body: Any) -> CreatedSession:
    """The ``data`` of a successful create, checked."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise BlandProtocolError("create response has no data object")
    session_id, ws_url = data.get("session_id"), data.get("ws_url")
    if not isinstance(session_id, str) or not session_id:
        raise BlandProtocolError("create response has no session_id")
    if not isinstance(ws_url, str) or not ws_url.startswith(("ws://", "wss://")):
        raise BlandProtocolError("create response has no ws:// or wss:// ws_url")
    duration = data.get("max_duration_seconds")
    return CreatedSession(
        session_id, ws_url, duration if isinstance(duration, int) else MAX_DURATION_S
    )


def error_summary(body: Any) -> str:
    """A one-line account of an ``errors`` list (codes and messages, never secrets)."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return "no error detail"
    parts = []
    for err in errors[:3]:
        if isinstance(err, dict):
            parts.append(": ".join(str(err[k]) for k in ("error", "code", "message") if err.get(k)))
        else:
            parts.append(str(err))
    return "; ".join(p for p in parts if p)[:300] or "no error detail"


def end_body(reason: str) -> dict[str, str]:
    return {"reason": reason[:MAX_REASON_CHARS]}


# -- WebSocket: what we send -----------------------------------------------------------------


def connected_message() -> str:
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start_message(stream_sid: str, call_sid: str) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": stream_sid,
            "start": {
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


def media_message(
    stream_sid: str, sequence: int, chunk: int, timestamp_ms: int, ulaw: bytes
) -> str:
    """One inbound media frame, numbers as strings like Twilio's."""
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(timestamp_ms),
                "payload": base64.b64encode(ulaw).decode("ascii"),
            },
        }
    )


def stop_message(stream_sid: str, sequence: int, call_sid: str) -> str:
    return json.dumps(
        {
            "event": "stop",
            "sequenceNumber": str(sequence),
            "streamSid": stream_sid,
            "stop": {"callSid": call_sid},
        }
    )


# -- WebSocket: what we receive --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Audio:
    ulaw: bytes


@dataclass(frozen=True, slots=True)
class Ready:
    pass


@dataclass(frozen=True, slots=True)
class Transcript:
    original: str
    translation: str


@dataclass(frozen=True, slots=True)
class TtsComplete:
    pass


@dataclass(frozen=True, slots=True)
class SessionEnded:
    reason: str


@dataclass(frozen=True, slots=True)
class Error:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """Something we do not act on (a ``mark``, an unknown event): logged at debug."""

    name: str


ServerMessage = Audio | Ready | Transcript | TtsComplete | SessionEnded | Error | Ignored


def parse_server_message(message: str | bytes) -> ServerMessage:
    """One frame from Bland's socket. Raises :class:`BlandProtocolError` when malformed."""
    if isinstance(message, bytes):
        raise BlandProtocolError("binary frame in twilio_ulaw mode")
    try:
        obj = json.loads(message)
    except ValueError as exc:
        raise BlandProtocolError("text frame is not JSON") from exc
    if not isinstance(obj, dict):
        raise BlandProtocolError("frame is not a JSON object")
    event = obj.get("event")
    if isinstance(event, str):  # a Twilio-shaped envelope
        return _parse_envelope(event, obj)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise BlandProtocolError("frame has neither event nor type")
    return _parse_control(kind, obj)


def _parse_envelope(event: str, obj: dict[str, Any]) -> ServerMessage:
    if event != "media":
        return Ignored(event)
    media = obj.get("media")
    payload = media.get("payload") if isinstance(media, dict) else None
    if not isinstance(payload, str):
        raise BlandProtocolError("media frame without media.payload")
    try:
        return Audio(base64.b64decode(payload, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise BlandProtocolError("media.payload is not base64") from exc


def _parse_control(kind: str, obj: dict[str, Any]) -> ServerMessage:
    if kind == "transcript":
        return Transcript(_text(obj, "original"), _text(obj, "translation"))
    if kind == "ready":
        return Ready()
    if kind == "tts_complete":
        return TtsComplete()
    if kind == "session_ended":
        return SessionEnded(_text(obj, "reason") or _text(obj, "end_reason"))
    if kind == "error":
        return Error(_text(obj, "code"), _text(obj, "message") or _text(obj, "error"))
    return Ignored(kind)


def _text(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""
