"""Twilio Media Streams wire format: text in, typed events out; typed commands in, text out.

This is the only module that knows Twilio's Media Stream JSON. It never touches a socket.
Facts it encodes (Twilio's Media Streams docs): every message is a JSON text frame with an
``event`` discriminator; numbers inside arrive as strings; media payloads are base64 raw 8 kHz
μ-law without a header; messages we send are ``media``, ``mark`` and ``clear``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.audio.pcm import TWILIO_FRAME_BYTES

# A Twilio text frame is a few hundred bytes (a 20 ms media frame is ~330); anything far larger
# is not Twilio. Bounded so one bad peer cannot make us parse megabytes.
MAX_MESSAGE_BYTES = 16 * 1024
# Twilio sends 20 ms (160 bytes) a frame; allow a generous multiple, refuse anything larger.
MAX_MEDIA_PAYLOAD_BYTES = 8 * TWILIO_FRAME_BYTES


class MediaProtocolError(ValueError):
    """A message that is not valid Twilio Media Streams JSON; ``kind`` names the fault."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str] = field(default_factory=dict)
    encoding: str = "audio/x-mulaw"
    sample_rate_hz: int = 8000
    channels: int = 1


@dataclass(frozen=True, slots=True)
class Media:
    stream_sid: str
    track: str
    timestamp_ms: int | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class Mark:
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Dtmf:
    stream_sid: str
    digit: str


@dataclass(frozen=True, slots=True)
class Stop:
    stream_sid: str
    call_sid: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """An event type we do not handle; ignored by callers (Twilio may add events)."""

    event: str


InboundEvent = Connected | Start | Media | Mark | Dtmf | Stop | Unknown


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MediaProtocolError("bad_field", f"{what} is not an object")
    return value


def _str(obj: dict[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise MediaProtocolError("bad_field", f"{what}.{key} missing or not a string")
    return value


def _opt_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # json accepts 1e999 and Infinity
        return None


def _parse_start(msg: dict[str, Any]) -> Start:
    start = _obj(msg.get("start"), "start")
    stream_sid = _str(start, "streamSid", "start")
    params = start.get("customParameters") or {}
    if not isinstance(params, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in params.items()
    ):
        raise MediaProtocolError("bad_field", "start.customParameters is not a string map")
    fmt = start.get("mediaFormat") or {}
    if not isinstance(fmt, dict):
        raise MediaProtocolError("bad_field", "start.mediaFormat is not an object")
    tracks = start.get("tracks") or []
    if not isinstance(tracks, list):
        raise MediaProtocolError("bad_field", "start.tracks is not a list")
    rate = _opt_int(fmt.get("sampleRate", 8000))
    channels = _opt_int(fmt.get("channels", 1))
    return Start(
        stream_sid=stream_sid,
        account_sid=_str(start, "accountSid", "start"),
        call_sid=_str(start, "callSid", "start"),
        tracks=tuple(str(t) for t in tracks),
        custom_parameters=dict(params),
        encoding=str(fmt.get("encoding", "audio/x-mulaw")),
        sample_rate_hz=rate if rate is not None else -1,
        channels=channels if channels is not None else -1,
    )


def _parse_media(msg: dict[str, Any]) -> Media:
    media = _obj(msg.get("media"), "media")
    raw = media.get("payload")
    if not isinstance(raw, str):
        raise MediaProtocolError("bad_field", "media.payload missing")
    # base64 grows 4/3: refuse before decoding anything oversized.
    if len(raw) > (MAX_MEDIA_PAYLOAD_BYTES * 4) // 3 + 4:
        raise MediaProtocolError("payload_too_large", "media.payload too large")
    try:
        payload = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaProtocolError("bad_base64", "media.payload is not base64") from exc
    if len(payload) > MAX_MEDIA_PAYLOAD_BYTES:
        raise MediaProtocolError("payload_too_large", "media.payload too large")
    return Media(
        stream_sid=_str(msg, "streamSid", "media"),
        track=str(media.get("track", "inbound")),
        timestamp_ms=_opt_int(media.get("timestamp")),
        payload=payload,
    )


def parse_message(text: str | bytes) -> InboundEvent:
    """Parse one Twilio text frame; raise :class:`MediaProtocolError` on anything malformed."""
    if isinstance(text, bytes):
        raise MediaProtocolError("binary_frame", "binary frame (Twilio sends text only)")
    if len(text) > MAX_MESSAGE_BYTES:
        raise MediaProtocolError("too_large", "message too large")
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MediaProtocolError("not_json", "not JSON") from exc
    msg = _obj(msg, "message")
    event = msg.get("event")
    if not isinstance(event, str):
        raise MediaProtocolError("no_event", "no event")
    if event == "media":
        return _parse_media(msg)
    if event == "start":
        return _parse_start(msg)
    if event == "mark":
        mark = _obj(msg.get("mark"), "mark")
        return Mark(stream_sid=_str(msg, "streamSid", "mark"), name=_str(mark, "name", "mark"))
    if event == "connected":
        return Connected(protocol=str(msg.get("protocol", "")), version=str(msg.get("version", "")))
    if event == "stop":
        stop = msg.get("stop")
        call_sid = stop.get("callSid", "") if isinstance(stop, dict) else ""
        return Stop(stream_sid=str(msg.get("streamSid", "")), call_sid=str(call_sid))
    if event == "dtmf":
        dtmf = _obj(msg.get("dtmf"), "dtmf")
        return Dtmf(stream_sid=_str(msg, "streamSid", "dtmf"), digit=_str(dtmf, "digit", "dtmf"))
    return Unknown(event=event)


def media_message(stream_sid: str, ulaw: bytes) -> str:
    """A ``media`` command carrying raw 8 kHz μ-law for Twilio to play."""
    payload = base64.b64encode(ulaw).decode("ascii")
    return json.dumps(
        {"event": "media", "streamSid": stream_sid, "media": {"payload": payload}},
        separators=(",", ":"),
    )


def media_messages(stream_sid: str) -> Callable[[bytes], str]:
    """:func:`media_message` for one stream, built without ``json.dumps`` per frame.

    The leg writer sends 50 of these a second per leg; only the payload changes, and base64
    needs no JSON escaping, so the rest is serialised once. Same text as ``media_message``.
    """
    head = json.dumps({"event": "media", "streamSid": stream_sid}, separators=(",", ":"))
    head = head[:-1] + ',"media":{"payload":"'

    def message(ulaw: bytes) -> str:
        return head + base64.b64encode(ulaw).decode("ascii") + '"}}'

    return message


def mark_message(stream_sid: str, name: str) -> str:
    """A ``mark``: Twilio echoes it back once everything queued before it has played."""
    return json.dumps(
        {"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}, separators=(",", ":")
    )


def clear_message(stream_sid: str) -> str:
    """A ``clear``: Twilio drops its unplayed buffer and returns every pending mark."""
    return json.dumps({"event": "clear", "streamSid": stream_sid}, separators=(",", ":"))
