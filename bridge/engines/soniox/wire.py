"""Soniox's real-time speech-to-text WebSocket, one-way translation mode: typed, no I/O.

Protocol facts (Soniox docs: WebSocket API, real-time translation, endpoint detection, error
handling, connection keepalive, WebSocket authentication):

* ``wss://stt-rt.soniox.com/transcribe-websocket``; the API key travels with the connection
  (``Authorization: Bearer <key>``); ``api_key`` in the start request is deprecated and refused
  from 15 January 2027, so it is never sent here.
* The first message is a JSON start request (model, audio format, translation, context...); then
  audio as binary frames; an empty frame ends the audio, after which the server sends what is
  left and a response with ``"finished": true``, then closes.
* Responses: ``{"tokens": [...], "final_audio_proc_ms", "total_audio_proc_ms"}``. A token has
  ``text``, ``is_final``, ``translation_status`` (``original`` / ``translation`` / ``none``),
  ``language`` and, for translations, ``source_language``. Final tokens are sent once; non-final
  ones are replaced by every response. With endpoint detection a final ``<end>`` token marks the
  end of an utterance (everything before it is final).
* Errors: ``{"error_code": 4xx/5xx, "error_message": ...}`` and the server closes the socket.
  503 ("Cannot continue request") means "start a new request".
* ``{"type": "keepalive"}`` keeps a session open while no audio is sent (at least every 20 s).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

DEFAULT_WS_URL = "wss://stt-rt.soniox.com/transcribe-websocket"
# The current real-time model in Soniox's WebSocket API reference (the seed used stt-rt-v3).
DEFAULT_MODEL = "stt-rt-v5"
# Raw 16-bit PCM at the phone's own 8 kHz: the bridge already holds exactly these samples
# (decoded from μ-law), so nothing is resampled or transcoded. Measured per 20 ms frame:
# 0.2 µs and 16 kB/s, against 1.0 µs / 8 kB/s re-encoding μ-law and 13 µs / 48 kB/s at 24 kHz.
AUDIO_FORMAT = "pcm_s16le"
SAMPLE_RATE_HZ = 8000
NUM_CHANNELS = 1
# Documented range 500..3000 ms, default 2000; a phone conversation turns over quickly.
MAX_ENDPOINT_DELAY_MS = 1000
END_TOKEN = "<end>"  # noqa: S105 - a transcript marker, not a secret
FIN_TOKEN = "<fin>"  # noqa: S105
END_OF_AUDIO = ""  # an empty frame: the official example sends an empty string
KEEPALIVE = json.dumps({"type": "keepalive"})
# Error codes after which a new request cannot help: the key, the request or the account.
REFUSAL_CODES = frozenset({400, 401, 402, 403})

TranslationStatus = Literal["original", "translation", "none"]


class WireError(ValueError):
    """A server message that is not a Soniox response."""


@dataclass(frozen=True, slots=True)
class TranslationTerm:
    """How a term the speaker says must come out in the target language."""

    source: str
    target: str


@dataclass(frozen=True, slots=True)
class StartRequest:
    """The first message of a session: one-way translation of everything into one language."""

    model: str
    target_language: str
    language_hints: tuple[str, ...] = ()
    terms: tuple[TranslationTerm, ...] = ()
    max_endpoint_delay_ms: int = MAX_ENDPOINT_DELAY_MS
    client_reference_id: str | None = None

    def to_json(self) -> str:
        request: dict[str, Any] = {
            "model": self.model,
            "audio_format": AUDIO_FORMAT,
            "sample_rate": SAMPLE_RATE_HZ,
            "num_channels": NUM_CHANNELS,
            "enable_endpoint_detection": True,
            "max_endpoint_delay_ms": self.max_endpoint_delay_ms,
            "translation": {"type": "one_way", "target_language": self.target_language},
        }
        if self.language_hints:
            request["language_hints"] = list(self.language_hints)
        if self.terms:
            request["context"] = {
                "translation_terms": [{"source": t.source, "target": t.target} for t in self.terms]
            }
        if self.client_reference_id:
            request["client_reference_id"] = self.client_reference_id
        return json.dumps(request, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    is_final: bool
    translation_status: TranslationStatus | None = None
    language: str | None = None

    @property
    def is_endpoint(self) -> bool:
        return self.text == END_TOKEN

    @property
    def is_marker(self) -> bool:
        """``<end>`` / ``<fin>``: control tokens, never spoken or shown."""
        return self.text in (END_TOKEN, FIN_TOKEN)


@dataclass(frozen=True, slots=True)
class ServerError:
    code: int
    message: str

    @property
    def is_refusal(self) -> bool:
        return self.code in REFUSAL_CODES

    def __str__(self) -> str:
        return f"Soniox error {self.code}: {self.message}"


@dataclass(frozen=True, slots=True)
class Response:
    tokens: tuple[Token, ...] = ()
    finished: bool = False
    error: ServerError | None = None


def parse_response(raw: str | bytes) -> Response:
    """One server message; raises :class:`WireError` if it is not a Soniox response."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WireError("not a JSON object")
    if data.get("error_code") is not None:
        try:
            code = int(data["error_code"])
        except (TypeError, ValueError):
            code = 0  # some clients see string codes; the message still says what happened
        return Response(error=ServerError(code, str(data.get("error_message") or "")))
    raw_tokens = data.get("tokens", [])
    if not isinstance(raw_tokens, list):
        raise WireError("tokens is not a list")
    return Response(tuple(_token(t) for t in raw_tokens), finished=bool(data.get("finished")))


def _token(raw: object) -> Token:
    if not isinstance(raw, dict) or not isinstance(raw.get("text"), str):
        raise WireError("token without text")
    status = raw.get("translation_status")
    if status not in (None, "original", "translation", "none"):
        raise WireError(f"unknown translation_status {status!r}")
    language = raw.get("language")
    return Token(
        raw["text"],
        bool(raw.get("is_final")),
        status,
        language if isinstance(language, str) else None,
    )


# A final translated chunk without an endpoint or a sentence end is spoken after this long:
# Soniox finalises a few words at a time, and a listener should not wait for a long sentence.
MAX_CHUNK_WAIT_S = 0.8
_SENTENCE_ENDS = (".", "!", "?", "…", "。", "！", "？", "؟", "।")


@dataclass
class ChunkAssembler:
    """Turns the token stream into final text: the speaker's words, and translated chunks ready
    to be spoken.

    A translated chunk is ready as soon as it is final and complete: at an endpoint (``<end>``),
    at the end of a sentence, or once its first final word has waited ``max_wait_s`` (a long
    sentence is spoken in pieces rather than late). Soniox sends translation tokens after the
    original tokens they translate, so they may follow the ``<end>`` of their utterance; then
    they are ready at the end of the response that brings them. Times are ``time.monotonic()``.
    """

    max_wait_s: float = MAX_CHUNK_WAIT_S
    _translation: list[str] = field(default_factory=list)
    _first_at: float | None = None
    _after_endpoint: bool = False

    def feed(self, tokens: Sequence[Token], now: float) -> tuple[str, str, list[str]]:
        """The final source and translated text of these tokens, and the translated chunks now
        ready to speak, in order."""
        source: list[str] = []
        translation: list[str] = []
        ready: list[str] = []
        for token in tokens:
            if not token.is_final:
                continue
            if token.is_endpoint:
                self._after_endpoint = not self._flush_into(ready)
                continue
            if token.is_marker:
                continue
            if token.translation_status == "translation":
                if self._first_at is None:
                    self._first_at = now
                self._translation.append(token.text)
                translation.append(token.text)
                if token.text.rstrip().endswith(_SENTENCE_ENDS):
                    self._flush_into(ready)
            else:
                source.append(token.text)
        if self._after_endpoint and self._flush_into(ready):
            self._after_endpoint = False
        ready.extend(self.due(now))
        return "".join(source), "".join(translation), ready

    def due(self, now: float) -> list[str]:
        """The waiting chunk, if it has waited ``max_wait_s``."""
        ready: list[str] = []
        if self._first_at is not None and now - self._first_at >= self.max_wait_s:
            self._flush_into(ready)
        return ready

    def flush(self) -> list[str]:
        """Whatever final translation is left (the session ended)."""
        ready: list[str] = []
        self._flush_into(ready)
        return ready

    def _flush_into(self, ready: list[str]) -> bool:
        text = "".join(self._translation).strip()
        self._translation.clear()
        self._first_at = None
        if text:
            ready.append(text)
        return bool(text)
