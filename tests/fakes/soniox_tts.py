"""A local stand-in for Soniox's real-time TTS WebSocket (``/tts-websocket``).

Speaks the documented protocol: the key with the connection (``Authorization: Bearer``, or the
deprecated ``api_key`` in a config message), up to 5 streams per connection by ``stream_id``,
each a config message (checked: model, language, voice, raw ``pcm_s16le``/``pcm_mulaw`` at a
documented rate) then text; at ``text_end`` the audio as base64 messages, the last with
``audio_end``, then ``terminated``. A stream error is ``{stream_id, error_code,
error_message}`` then ``terminated``; the connection stays. ``{"keep_alive": true}`` is
counted. A bad key is answered with an error and a close.

The voice "says" each word as 200 ms of ``tone_for(language)`` at the requested rate.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection

from tests.fakes.audio import pcm16_to_bytes, sine
from tests.fakes.loopback_ws import LoopbackServer, PeerRecord
from tests.fakes.openai_translate import tone_for

PATH = "/tts-websocket"
WORD_MS = 200
CHUNK_MS = 100
MAX_STREAMS = 5
PCM_RATES_HZ = (8000, 16000, 24000, 44100, 48000)


@dataclass
class TtsConnection(PeerRecord):
    configs: list[dict[str, Any]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    keepalives: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def check_config(config: dict[str, Any], active: dict[str, Any]) -> str | None:
    for name in ("model", "language", "voice", "audio_format", "stream_id"):
        if not isinstance(config.get(name), str) or not config[name]:
            return f"Missing required field: {name}"
    if config["stream_id"] in active:
        return "stream_id is already active on this connection"
    if len(active) >= MAX_STREAMS:
        return "Too many concurrent streams on this connection"
    if config["audio_format"] == "pcm_s16le" and config.get("sample_rate") not in PCM_RATES_HZ:
        return "Invalid sample_rate for pcm_s16le"
    if config["audio_format"] not in ("pcm_s16le",):
        return "The stand-in speaks pcm_s16le only"
    return None


class FakeSonioxTts(LoopbackServer[TtsConnection]):
    PATH = PATH

    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.fail_streams = False  # answer every stream with an error

    def _handle(self, connection: ServerConnection) -> None:
        http = connection.request
        assert http is not None
        conn = self._track(TtsConnection(dict(http.headers.raw_items()), connection=connection))
        try:
            self._serve(conn, connection, http.headers.get("Authorization", ""))
        except ConnectionClosed:
            pass
        finally:
            conn.ended.set()

    def _serve(self, conn: TtsConnection, connection: ServerConnection, auth: str) -> None:
        header_key = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        active: dict[str, dict[str, Any]] = {}
        texts: dict[str, list[str]] = {}
        for message in connection:
            data = json.loads(message)
            if data.get("keep_alive") is True:
                conn.keepalives += 1
                continue
            key = header_key or str(data.get("api_key") or "")
            if not key or (self.api_key is not None and key != self.api_key):
                self._send(connection, {"error_code": 401, "error_message": "Invalid API key."})
                connection.close(1000)
                return
            stream_id = str(data.get("stream_id") or "")
            if "text" not in data and not data.get("cancel"):
                problem = check_config(data, active)
                if problem is not None:
                    self._stream_error(connection, conn, stream_id, 400, problem)
                    continue
                conn.configs.append(data)
                active[stream_id] = data
                texts[stream_id] = []
                continue
            if stream_id not in active:
                self._stream_error(connection, conn, stream_id, 400, "Unknown stream_id")
                continue
            if data.get("cancel"):
                del active[stream_id]
                self._send(connection, {"terminated": True, "stream_id": stream_id})
                continue
            texts[stream_id].append(str(data["text"]))
            if data.get("text_end"):
                config = active.pop(stream_id)
                text = "".join(texts.pop(stream_id))
                conn.texts.append(text)
                if self.fail_streams:
                    self._stream_error(connection, conn, stream_id, 500, "Synthesis failed.")
                    continue
                self._speak(connection, config, text)

    def _speak(self, connection: ServerConnection, config: dict[str, Any], text: str) -> None:
        rate = int(config["sample_rate"])
        total = max(1, len(text.split())) * rate * WORD_MS // 1000
        audio = sine(tone_for(config["language"]), total, rate, 8000.0, 0)
        step = rate * CHUNK_MS // 1000
        starts = list(range(0, total, step))
        for start in starts:
            chunk = pcm16_to_bytes(audio[start : start + step])
            message: dict[str, Any] = {
                "audio": base64.b64encode(chunk).decode("ascii"),
                "stream_id": config["stream_id"],
            }
            if start == starts[-1]:
                message["audio_end"] = True
            self._send(connection, message)
        self._send(connection, {"terminated": True, "stream_id": config["stream_id"]})

    def _stream_error(
        self,
        connection: ServerConnection,
        conn: TtsConnection,
        stream_id: str,
        code: int,
        text: str,
    ) -> None:
        conn.errors.append((code, text))
        self._send(connection, {"stream_id": stream_id, "error_code": code, "error_message": text})
        self._send(connection, {"terminated": True, "stream_id": stream_id})

    def _send(self, connection: ServerConnection, message: dict[str, Any]) -> None:
        connection.send(json.dumps(message))
