"""GPT Translator's Realtime Translation API on the wire (pure: no sockets, no threads).

The API is Socket.IO: one namespace, the API key as an ``apiKey`` query parameter of the
connection, then named events each carrying one JSON object. This module is the only place that
knows those names and shapes: the link builds payloads with the functions below and turns what
the server emits into the typed events below.

Protocol facts (from GPT Translator's API document) and, marked *inferred*, what it leaves out:

* Endpoint ``https://api.gpttranslator.co``, namespace ``/api/realtime-translator``; the document's
  client is ``io('https://api.gpttranslator.co/api/realtime-translator', {transports:
  ['websocket'], query: {apiKey}})``, so a URL's path *is* the namespace and the Socket.IO
  endpoint is the default ``/socket.io`` (inferred from socket.io-client's ``io(url)`` rules).
* A bad key is "rejected immediately" (inferred: a refused namespace connection).
* ``translation_start {targetLanguage}`` (BCP-47); no source language, voice or model field
  exists (inferred: the source language is detected).
* ``session_initializing``, ``translation_ready``, then ``ready_for_audio``: audio only after it.
* ``audio_chunk {audioData}``: base64 PCM16 little-endian mono at 24 kHz, ~100 ms each.
* ``output_audio {delta}`` (base64 PCM16; 24 kHz mono is inferred, the document gives no output
  format), ``output_transcript {delta}``, ``input_transcript {delta}``: incremental.
* ``translation_stop`` (no payload) → ``translation_closed``; ``translation_error {message}``
  may leave the session open; ``insufficient_tokens {message, remainingTokens}`` precedes the
  server closing the session.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import SplitResult, urlencode, urlsplit

DEFAULT_URL: Final = "https://api.gpttranslator.co/api/realtime-translator"
DEFAULT_NAMESPACE: Final = "/api/realtime-translator"
API_KEY_PARAM: Final = "apiKey"
TRANSPORTS: Final = ("websocket",)  # as in the document's client: no long-polling
SAMPLE_RATE_HZ: Final = 24000
SAMPLE_WIDTH: Final = 2

# Events the client emits.
TRANSLATION_START: Final = "translation_start"
AUDIO_CHUNK: Final = "audio_chunk"
TRANSLATION_STOP: Final = "translation_stop"
# Events the server emits.
SESSION_INITIALIZING: Final = "session_initializing"
TRANSLATION_READY: Final = "translation_ready"
READY_FOR_AUDIO: Final = "ready_for_audio"
OUTPUT_AUDIO: Final = "output_audio"
OUTPUT_TRANSCRIPT: Final = "output_transcript"
INPUT_TRANSCRIPT: Final = "input_transcript"
TRANSLATION_CLOSED: Final = "translation_closed"
TRANSLATION_ERROR: Final = "translation_error"
INSUFFICIENT_TOKENS: Final = "insufficient_tokens"
SERVER_EVENTS: Final = (
    SESSION_INITIALIZING,
    TRANSLATION_READY,
    READY_FOR_AUDIO,
    OUTPUT_AUDIO,
    OUTPUT_TRANSCRIPT,
    INPUT_TRANSCRIPT,
    TRANSLATION_CLOSED,
    TRANSLATION_ERROR,
    INSUFFICIENT_TOKENS,
)


_SCHEMES: Final = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


class WireError(ValueError):
    """A server event whose payload does not have the documented shape."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect: the Socket.IO server's origin and the namespace on it."""

    origin: str
    namespace: str

    def connect_url(self, api_key: str) -> str:
        """The origin with the key as a query parameter. Holds the secret: never log it."""
        return f"{self.origin}?{urlencode({API_KEY_PARAM: api_key})}"


def parse_endpoint(url: str) -> Endpoint:
    """``https://host[:port][/namespace]`` → :class:`Endpoint`; raises ``ValueError``.

    ``wss://`` (how the document writes the endpoint) and ``ws://`` are taken as ``https://``
    and ``http://``: Socket.IO clients take the http(s) form and choose the transport.
    No path means the document's namespace; a query or fragment is refused (the key goes in
    the query, and only there).
    """
    parts: SplitResult = urlsplit(url.strip())
    scheme = _SCHEMES.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError("must be an http(s) or ws(s) URL")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or fragment (the key is sent separately)")
    path = parts.path.rstrip("/")
    return Endpoint(f"{scheme}://{parts.netloc}", path or DEFAULT_NAMESPACE)


# -- what the client emits ------------------------------------------------------------------


def start_payload(target_language: str) -> dict[str, str]:
    return {"targetLanguage": target_language}


def audio_chunk_payload(pcm24: bytes) -> dict[str, str]:
    """One ``audio_chunk``: 24 kHz PCM16 little-endian mono bytes, base64-encoded."""
    if len(pcm24) % SAMPLE_WIDTH:
        raise ValueError("PCM16 audio must be a whole number of samples")
    return {"audioData": base64.b64encode(pcm24).decode("ascii")}


# -- what the server emits ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    """``session_initializing``, ``translation_ready``, ``ready_for_audio`` or
    ``translation_closed``: a lifecycle step with no payload we use."""

    name: str


@dataclass(frozen=True, slots=True)
class OutputAudio:
    pcm: bytes  # PCM16 little-endian mono, SAMPLE_RATE_HZ (trailing odd byte dropped)


@dataclass(frozen=True, slots=True)
class Transcript:
    source: bool  # True: the speaker's words (input_transcript); False: the translation
    delta: str


@dataclass(frozen=True, slots=True)
class TranslationError:
    message: str


@dataclass(frozen=True, slots=True)
class InsufficientTokens:
    message: str
    remaining_tokens: int | None


ServerEvent = Status | OutputAudio | Transcript | TranslationError | InsufficientTokens

_STATUSES: Final = frozenset(
    {SESSION_INITIALIZING, TRANSLATION_READY, READY_FOR_AUDIO, TRANSLATION_CLOSED}
)


def parse_server_event(name: str, data: Any) -> ServerEvent | None:
    """A server event as received (name, first argument); None for an event the document
    does not name (ignored by the caller). Raises :class:`WireError` for a malformed one."""
    if name in _STATUSES:
        return Status(name)
    if name == OUTPUT_AUDIO:
        delta = _field(name, data, "delta")
        try:
            pcm = base64.b64decode(delta, validate=True)
        except (binascii.Error, ValueError):
            raise WireError(f"{name}.delta is not base64") from None
        return OutputAudio(pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH])
    if name in (OUTPUT_TRANSCRIPT, INPUT_TRANSCRIPT):
        return Transcript(name == INPUT_TRANSCRIPT, _field(name, data, "delta"))
    if name == TRANSLATION_ERROR:
        return TranslationError(_optional_text(data, "message"))
    if name == INSUFFICIENT_TOKENS:
        remaining = data.get("remainingTokens") if isinstance(data, dict) else None
        valid = isinstance(remaining, int) and not isinstance(remaining, bool)
        return InsufficientTokens(_optional_text(data, "message"), remaining if valid else None)
    return None


def _field(name: str, data: Any, key: str) -> str:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str):
        raise WireError(f"{name} has no string {key!r}")
    return value


def _optional_text(data: Any, key: str) -> str:
    # Error payloads are informative only: a missing message must not hide the error itself.
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""
