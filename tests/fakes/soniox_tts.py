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
import contextlib
import json
import socket
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from tests.fakes.audio import pcm16_to_bytes, sine
from tests.fakes.openai_translate import tone_for

PATH = "/tts-websocket"
WORD_MS = 200
CHUNK_MS = 100
MAX_STREAMS = 5
PCM_RATES_HZ = (8000, 16000, 24000, 44100, 48000)
_JOIN_S = 5.0


@dataclass
class TtsConnection:
    headers: dict[str, str]
    configs: list[dict[str, Any]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    keepalives: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    ended: threading.Event = field(default_factory=threading.Event)
    connection: ServerConnection | None = field(default=None, repr=False)

    def drop(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(OSError):
                self.connection.socket.shutdown(socket.SHUT_RDWR)


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


class FakeSonioxTts:
    def __init__(self, *, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.fail_streams = False  # answer every stream with an error
        self.connections: list[TtsConnection] = []
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    def __enter__(self) -> FakeSonioxTts:
        self._server = serve(
            self._handle, "127.0.0.1", 0, ping_interval=None, max_size=None, close_timeout=2
        )
        self._port = int(self._server.socket.getsockname()[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-soniox-tts", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        if self._thread is not None:
            self._thread.join(_JOIN_S)
        for conn in self.snapshot():
            conn.drop()
            conn.ended.wait(_JOIN_S)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._port}{PATH}"

    def snapshot(self) -> list[TtsConnection]:
        with self._lock:
            return list(self.connections)

    def _handle(self, connection: ServerConnection) -> None:
        http = connection.request
        assert http is not None
        conn = TtsConnection(dict(http.headers.raw_items()), connection=connection)
        with self._lock:
            self.connections.append(conn)
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
