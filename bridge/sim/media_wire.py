"""Twilio's side of the Media Streams wire: the messages it sends, and its checks on what the
bridge sends back.

Pure: values in, JSON text out; text in, a typed message and the protocol problems Twilio would
log (its error codes: 31950 a binary frame, 31951 a malformed message) out. The stream that
owns the socket (:class:`bridge.sim.media.MediaStreamClient`) decides when to send and what a
received message does.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass

# The only messages a bridge may send on a bidirectional stream, and their fields.
_ALLOWED_KEYS = {
    "media": {"event", "streamSid", "media"},
    "mark": {"event", "streamSid", "mark"},
    "clear": {"event", "streamSid"},
}


# -- Twilio → bridge ------------------------------------------------------------------------------
def connected_message() -> str:
    """The first message on every stream."""
    return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start_message(
    seq: int, stream_sid: str, account_sid: str, call_sid: str, parameters: Mapping[str, str]
) -> str:
    """``start``: the call, the stream's ``<Parameter>``s and its audio format (8 kHz μ-law)."""
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "start": {
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": dict(parameters),
                "mediaFormat": {
                    "encoding": "audio/x-mulaw",
                    "sampleRate": 8000,
                    "channels": 1,
                },
            },
        }
    )


def media_message(seq: int, stream_sid: str, index: int, ulaw: bytes) -> str:
    """The ``index``-th 20 ms frame of the caller's audio (chunks count from 1, in ms)."""
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "media": {
                "track": "inbound",
                "chunk": str(index + 1),
                "timestamp": str(index * 20),
                "payload": base64.b64encode(ulaw).decode("ascii"),
            },
        }
    )


def mark_message(seq: int, stream_sid: str, name: str) -> str:
    """A mark echoed back: the audio queued before it has played."""
    return json.dumps(
        {
            "event": "mark",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "mark": {"name": name},
        }
    )


def stop_message(seq: int, stream_sid: str, account_sid: str, call_sid: str) -> str:
    """``stop``: the stream ends (the socket is closed after it)."""
    return json.dumps(
        {
            "event": "stop",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "stop": {"accountSid": account_sid, "callSid": call_sid},
        }
    )


# -- bridge → Twilio ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Media:
    """Audio to play: the decoded payload (never empty)."""

    ulaw: bytes


@dataclass(frozen=True, slots=True)
class Mark:
    """A mark to echo once the audio queued before it has played."""

    name: str


@dataclass(frozen=True, slots=True)
class Clear:
    """Drop the audio queued and not yet played (marks in it are echoed at once)."""


BridgeMessage = Media | Mark | Clear


def read_message(message: str | bytes, stream_sid: str) -> tuple[BridgeMessage | None, list[str]]:
    """A message from the bridge on stream ``stream_sid``, and the problems Twilio would log
    about it, in order. None when Twilio would ignore the message."""
    if isinstance(message, bytes):
        return None, ["31950: binary frame"]
    try:
        data = json.loads(message)
    except ValueError:
        return None, ["31951: invalid JSON"]
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        return None, ["31951: message without an event"]
    event = data["event"]
    if event not in _ALLOWED_KEYS:
        return None, [f"31951: unknown event {event!r}"]
    if data.get("streamSid") != stream_sid:
        return None, [f"31951: {event} with wrong streamSid {data.get('streamSid')!r}"]
    problems: list[str] = []
    extra = set(data) - _ALLOWED_KEYS[event]
    if extra:
        problems.append(f"31951: {event} with unknown fields {sorted(extra)}")
    if event == "media":
        return _read_media(data.get("media"), problems)
    if event == "mark":
        mark = data.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str):
            return None, [*problems, "31951: mark without a name"]
        return Mark(name), problems
    return Clear(), problems


def _read_media(media: object, problems: list[str]) -> tuple[Media | None, list[str]]:
    payload = media.get("payload") if isinstance(media, dict) else None
    if not isinstance(payload, str):
        return None, [*problems, "31951: media without a payload"]
    if isinstance(media, dict) and set(media) - {"payload"}:
        problems.append(f"31951: media with unknown fields {sorted(set(media) - {'payload'})}")
    try:
        ulaw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None, [*problems, "31951: media payload is not base64"]
    if not ulaw:
        return None, [*problems, "31951: media with an empty payload"]
    return Media(ulaw), problems
