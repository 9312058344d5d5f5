"""Soniox's real-time text-to-speech WebSocket: typed, no I/O.

Protocol facts (Soniox docs: TTS WebSocket API, stream termination, connection keepalive,
WebSocket authentication, TTS audio formats):

* ``wss://tts-rt.soniox.com/tts-websocket``; the key travels with the connection
  (``Authorization: Bearer``); ``api_key`` in the config message is deprecated.
* One connection carries up to 5 streams, told apart by a client-chosen ``stream_id``. A stream
  starts with a config message (``model``, ``language``, ``voice``, ``audio_format``,
  ``sample_rate``, ``stream_id``), then text messages; the last has ``text_end: true``.
* The server answers with ``{"audio": <base64>, "stream_id"}`` messages, the last with
  ``audio_end: true``, then ``{"terminated": true, "stream_id"}``. A failed stream gets
  ``{"stream_id", "error_code", "error_message"}`` and then ``terminated``; the connection stays.
* ``pcm_s16le`` comes at 8000, 16000, 24000, 44100 or 48000 Hz: 8 kHz is the phone's own rate.
* ``{"keep_alive": true}`` every 20–30 s keeps an idle connection open.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

DEFAULT_TTS_WS_URL = "wss://tts-rt.soniox.com/tts-websocket"
DEFAULT_TTS_MODEL = "tts-rt-v1"  # the model of the TTS WebSocket API reference's example
DEFAULT_TTS_VOICE = "Adrian"  # the voice of its examples; every voice speaks every language
AUDIO_FORMAT = "pcm_s16le"
SAMPLE_RATE_HZ = 8000
KEEPALIVE = json.dumps({"keep_alive": True})


class TtsWireError(ValueError):
    """A server message that is not a Soniox TTS message."""


def stream_config(
    *, model: str, language: str, voice: str, stream_id: str, sample_rate: int = SAMPLE_RATE_HZ
) -> str:
    return json.dumps(
        {
            "model": model,
            "language": language,
            "voice": voice,
            "audio_format": AUDIO_FORMAT,
            "sample_rate": sample_rate,
            "stream_id": stream_id,
        }
    )


def stream_text(text: str, stream_id: str, *, end: bool) -> str:
    return json.dumps({"text": text, "text_end": end, "stream_id": stream_id}, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class TtsEvent:
    stream_id: str | None
    audio: bytes = b""
    audio_end: bool = False
    terminated: bool = False
    error_code: int | None = None
    error_message: str = ""


def parse_event(raw: str | bytes) -> TtsEvent:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TtsWireError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TtsWireError("not a JSON object")
    stream_id = data.get("stream_id")
    audio = b""
    if data.get("audio"):
        try:
            audio = base64.b64decode(str(data["audio"]), validate=True)
        except (binascii.Error, ValueError):
            raise TtsWireError("audio is not base64") from None
    code = data.get("error_code")
    try:
        error_code = None if code is None else int(code)
    except (TypeError, ValueError):
        error_code = 0
    return TtsEvent(
        stream_id=str(stream_id) if stream_id is not None else None,
        audio=audio,
        audio_end=bool(data.get("audio_end")),
        terminated=bool(data.get("terminated")),
        error_code=error_code,
        error_message=str(data.get("error_message") or ""),
    )
