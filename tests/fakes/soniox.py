"""A local stand-in for Soniox's real-time WebSocket (``/transcribe-websocket``), translating.

Speaks the documented protocol: the key with the connection (``Authorization: Bearer``; the
deprecated ``api_key`` in the start request is honoured too), a JSON start request first
(checked: model, raw audio format with ``sample_rate``/``num_channels``, ``translation``), then
binary audio; an empty frame ends the audio and is answered with the rest and ``finished``,
then a normal close. Every error is ``{"error_code", "error_message"}`` followed by a close.

"Translation": each 200 ms of speech (RMS above a threshold) in 100 ms frames becomes a final
original token ``speech `` and a final translated token, the target language's word from
``tests.fakes.openai_translate.OUTPUT_WORDS``; 300 ms of silence after speech is an endpoint
(``<end>``). The speech stand-in turns those words back into ``tone_for(language)``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection

from tests.fakes.audio import pcm16_from_bytes, rms, ulaw_to_pcm16
from tests.fakes.loopback_ws import LoopbackServer, PeerRecord
from tests.fakes.openai_translate import INPUT_WORD, OTHER_WORD, OUTPUT_WORDS

PATH = "/transcribe-websocket"
FRAME_MS = 100
WORD_FRAMES = 2  # a word per 200 ms of speech
ENDPOINT_FRAMES = 3  # 300 ms of silence ends an utterance
SPEECH_RMS = 300.0
RAW_FORMATS = {"pcm_s16le": 2, "mulaw": 1}  # the raw formats this stand-in decodes: bytes/sample
# The documented error shape; the texts are the stand-in's own (Soniox's exact words unknown).
MISSING_KEY = (401, "Missing API key.")
# Responses a client must skip: not JSON, not an object, tokens of the wrong types.
MALFORMED_RESPONSES = (
    "this is not JSON {",
    "[1, 2]",
    '{"tokens": 5}',
    '{"tokens": [{"text": 5, "is_final": true}]}',
    '{"tokens": [{"text": "x", "is_final": true, "translation_status": "sideways"}]}',
    '{"something": "unknown"}',
)
BAD_KEY = (401, "Invalid API key.")


@dataclass
class SonioxRequest(PeerRecord):
    """One WebSocket connection as the stand-in saw it."""

    start: dict[str, Any] | None = None
    audio_bytes: int = 0
    bytes_per_ms: float = 16.0
    keepalives: int = 0
    got_end_of_audio: bool = False
    sent_finished: bool = False
    responses: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    @property
    def received_ms(self) -> float:
        return self.audio_bytes / self.bytes_per_ms

    @property
    def ended_cleanly(self) -> bool:
        return self.got_end_of_audio and self.sent_finished


class _Translator:
    """The stand-in's "model" for one request."""

    def __init__(self, request: SonioxRequest, start: dict[str, Any]) -> None:
        self._request = request
        self._width = RAW_FORMATS[start["audio_format"]]
        self._mulaw = start["audio_format"] == "mulaw"
        self._frame_bytes = int(start["sample_rate"]) * FRAME_MS // 1000 * self._width
        self._target = str(start["translation"]["target_language"])
        hints = start.get("language_hints") or ["en"]
        self._source = str(hints[0])
        self._pending = bytearray()
        self._speech_frames = 0
        self._silent_frames = 0
        self._processed_ms = 0

    def audio(self, data: bytes) -> list[dict[str, Any]]:
        self._pending.extend(data)
        out: list[dict[str, Any]] = []
        while len(self._pending) >= self._frame_bytes:
            frame = bytes(self._pending[: self._frame_bytes])
            del self._pending[: self._frame_bytes]
            out.extend(self._frame(frame))
        return out

    def end(self) -> list[dict[str, Any]]:
        out = self._frame(bytes(self._pending)) if self._pending else []
        self._pending.clear()
        if self._speech_frames:
            out.append(self._endpoint())
        return out

    def _frame(self, frame: bytes) -> list[dict[str, Any]]:
        samples = ulaw_to_pcm16(frame) if self._mulaw else pcm16_from_bytes(frame)
        self._processed_ms += FRAME_MS * len(frame) // self._frame_bytes
        if len(samples) and rms(samples) > SPEECH_RMS:
            self._speech_frames += 1
            self._silent_frames = 0
            if self._speech_frames % WORD_FRAMES == 0:
                return [self._word(with_partial=True)]
            return []
        if not self._speech_frames:
            return []
        self._silent_frames += 1
        if self._silent_frames < ENDPOINT_FRAMES:
            return []
        return [self._endpoint()]

    def _word(self, *, with_partial: bool) -> dict[str, Any]:
        word = OUTPUT_WORDS.get(self._target, OTHER_WORD)
        tokens = [
            self._token(INPUT_WORD, "original", self._source),
            {**self._token(word, "translation", self._target), "source_language": self._source},
        ]
        if with_partial:  # the next word, still provisional: clients must not keep it
            tokens.append({**self._token("spe", "original", self._source), "is_final": False})
        return self._response(tokens)

    def _endpoint(self) -> dict[str, Any]:
        tokens: list[dict[str, Any]] = []
        if self._speech_frames % WORD_FRAMES:
            tokens = self._word(with_partial=False)["tokens"]
        self._speech_frames = 0
        self._silent_frames = 0
        return self._response([*tokens, {"text": "<end>", "is_final": True}])

    def _token(self, text: str, status: str, language: str) -> dict[str, Any]:
        token: dict[str, Any] = {
            "text": text,
            "is_final": True,
            "translation_status": status,
            "language": language,
        }
        if status != "translation":  # translated tokens carry no timestamps (Soniox's docs)
            token.update(start_ms=self._processed_ms - FRAME_MS, end_ms=self._processed_ms)
        return token

    def _response(self, tokens: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "tokens": tokens,
            "final_audio_proc_ms": self._processed_ms,
            "total_audio_proc_ms": self._processed_ms,
        }


def check_start(start: object, authorization: str, api_key: str | None) -> tuple[int, str] | None:
    """What Soniox would refuse in a start request, as (error_code, error_message)."""
    if not isinstance(start, dict):
        return 400, "Start request must be a JSON object."
    key = (
        authorization.removeprefix("Bearer ").strip() if authorization.startswith("Bearer ") else ""
    )
    key = key or str(start.get("api_key") or "")
    if not key:
        return MISSING_KEY
    if api_key is not None and key != api_key:
        return BAD_KEY
    if not isinstance(start.get("model"), str) or not start["model"]:
        return 400, "Missing required field: model."
    audio_format = start.get("audio_format")
    if audio_format not in RAW_FORMATS:
        return 400, f"Unsupported audio_format for this stand-in: {audio_format!r}."
    rate, channels = start.get("sample_rate"), start.get("num_channels")
    if not isinstance(rate, int) or not 2000 <= rate <= 96000 or channels != 1:
        return 400, "Raw audio formats require sample_rate and num_channels (mono here)."
    translation = start.get("translation")
    if (
        not isinstance(translation, dict)
        or translation.get("type") != "one_way"
        or not isinstance(translation.get("target_language"), str)
    ):
        return 400, "Invalid translation: expected one_way with a target_language."
    delay = start.get("max_endpoint_delay_ms")
    if delay is not None and not (isinstance(delay, int) and 500 <= delay <= 3000):
        return 400, "max_endpoint_delay_ms must be between 500 and 3000."
    terms = (start.get("context") or {}).get("translation_terms", [])
    if not isinstance(terms, list) or not all(
        isinstance(t, dict)
        and isinstance(t.get("source"), str)
        and isinstance(t.get("target"), str)
        for t in terms
    ):
        return 400, "Invalid context.translation_terms."
    return None


class FakeSoniox(LoopbackServer[SonioxRequest]):
    """The WebSocket server on 127.0.0.1. Use as a context manager."""

    PATH = PATH

    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        # "reject": answer every start request with an error (400); "close": close the socket
        # on it (1011); "drop": accept it, then close (1011). None: serve it.
        self.config_fault: str | None = None
        self.malformed = False  # send MALFORMED_RESPONSES after each accepted start request

    def _handle(self, connection: ServerConnection) -> None:
        http = connection.request
        assert http is not None
        request = self._track(SonioxRequest(dict(http.headers.raw_items()), connection=connection))
        try:
            if http.path.split("?")[0] != PATH:
                self._error(request, 404, "Not found.")
                return
            self._serve(request, connection, http.headers.get("Authorization", ""))
        except ConnectionClosed:
            pass  # the client went away; recorded by what it did not do
        finally:
            request.ended.set()

    def _serve(self, request: SonioxRequest, connection: ServerConnection, auth: str) -> None:
        first = connection.recv(timeout=10)
        try:
            start = json.loads(first) if isinstance(first, str) else None
        except ValueError:
            start = None
        problem = check_start(start, auth, self.api_key)
        if problem is not None or not isinstance(start, dict):
            self._error(request, *(problem or (400, "Invalid start request.")))
            return
        if self.config_fault == "reject":
            self._error(request, 400, "Invalid translation configuration.")
            return
        if self.config_fault == "close":
            connection.close(1011, "closed on the start request")
            return
        request.start = start
        if self.config_fault == "drop":
            connection.close(1011, "dropped after the start request")
            return
        if self.malformed:
            for raw in MALFORMED_RESPONSES:
                connection.send(raw)
        translator = _Translator(request, start)
        request.bytes_per_ms = start["sample_rate"] * RAW_FORMATS[start["audio_format"]] / 1000
        for message in connection:
            if message in ("", b""):
                request.got_end_of_audio = True
                for response in translator.end():
                    self._send(request, response)
                self._send(request, {"tokens": [], "finished": True})
                request.sent_finished = True
                connection.close(1000)
                return
            if isinstance(message, bytes):
                request.audio_bytes += len(message)
                for response in translator.audio(message):
                    self._send(request, response)
                continue
            control = json.loads(message) if message.startswith("{") else None
            if isinstance(control, dict) and control.get("type") == "keepalive":
                request.keepalives += 1
                continue
            self._error(request, 400, "Unknown control message.")
            return

    def _send(self, request: SonioxRequest, response: dict[str, Any]) -> None:
        assert request.connection is not None
        request.responses.append((time.monotonic(), response))
        request.connection.send(json.dumps(response))

    def _error(self, request: SonioxRequest, code: int, message: str) -> None:
        self._send(request, {"error_code": code, "error_message": message})
        assert request.connection is not None
        request.connection.close(1000)
