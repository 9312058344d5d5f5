"""A local stand-in for OpenAI's realtime translation WebSocket (``gpt-realtime-translate``).

``FakeTranslationServer`` serves ``GET /v1/realtime/translations?model=…`` on 127.0.0.1 with
the websockets sync server; point the official SDK at it with
``OpenAI(api_key=…, base_url=server.base_url)``.

Concurrency: the websockets server runs one thread per connection (the reader, which validates
client events and runs the script hooks); each :class:`FakeSession` owns one writer thread (see
``openai_session``). ``stop()`` closes every connection and joins every thread.

The default script, :class:`ToneTranslator`, "translates" each 200 ms input frame that holds
speech into 200 ms of a sine tone whose pitch names the output language, so tests can tell which
session's output reached which phone leg.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from openai.types.realtime import (
    RealtimeTranslationInputAudioBufferAppendEvent,
    RealtimeTranslationSessionCloseEvent,
    RealtimeTranslationSessionUpdateEvent,
)
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from tests.fakes import openai_events as wire
from tests.fakes.audio import ENGINE_RATE_HZ, pcm16_from_bytes, pcm16_to_bytes, rms, sine
from tests.fakes.openai_session import (
    FRAME_BYTES,
    FRAME_MS,
    FRAME_SAMPLES,
    AppendRecord,
    FakeSession,
)

__all__ = [
    "FRAME_BYTES",
    "FRAME_MS",
    "FRAME_SAMPLES",
    "AppendRecord",
    "FakeSession",
    "FakeTranslationServer",
    "ToneTranslator",
    "TranslationScript",
    "tone_for",
]

logger = logging.getLogger(__name__)

TRANSLATION_PATH = "/v1/realtime/translations"
DEFAULT_TONES_HZ: dict[str | None, float] = {"en": 440.0, "es": 660.0}
OTHER_TONE_HZ = 550.0
OUTPUT_WORDS: dict[str | None, str] = {"en": "hello ", "es": "hola ", "fr": "bonjour "}
OTHER_WORD = "word "
INPUT_WORD = "speech "
_JOIN_TIMEOUT_S = 5.0


def tone_for(language: str | None) -> float:
    """The tone frequency (Hz) :class:`ToneTranslator` uses for an output language."""
    return DEFAULT_TONES_HZ.get(language, OTHER_TONE_HZ)


class TranslationScript:
    """Behaviour of the fake model. Subclass and override hooks to script scenarios.

    Hooks run on the session's reader thread and respond through ``session.send`` /
    ``session.send_error`` / ``session.close_connection`` (all scheduled, never blocking).
    The base class emits nothing: a model that stays silent.
    """

    def on_connect(self, session: FakeSession) -> None:
        """After ``session.created`` was queued."""

    def on_append(self, session: FakeSession, audio: bytes) -> None:
        """For every valid append, before its frames are consumed."""

    def on_frame(self, session: FakeSession, index: int, frame: bytes) -> None:
        """For each complete 200 ms input frame (``index`` from 0; ``FRAME_BYTES`` long)."""

    def on_close(self, session: FakeSession) -> None:
        """On ``session.close``, after the flush and before ``session.closed`` is queued."""


class ToneTranslator(TranslationScript):
    """Default script: each speech frame becomes 200 ms of a language-specific tone.

    A frame is speech when its RMS exceeds ``rms_threshold``; silence produces nothing (like the
    real model). Output follows the frame by ``delay_s``.
    """

    def __init__(
        self, delay_s: float = 0.0, rms_threshold: float = 300.0, amplitude: float = 8000.0
    ) -> None:
        self.delay_s = delay_s
        self.rms_threshold = rms_threshold
        self.amplitude = amplitude

    def is_speech(self, frame: bytes) -> bool:
        """Whether a 200 ms frame counts as speech."""
        return rms(pcm16_from_bytes(frame)) > self.rms_threshold

    def send_tone(self, session: FakeSession, index: int) -> int:
        """Send 200 ms of the output language's tone for input frame ``index`` (the phase
        carries on across deltas); returns the frame's ``elapsed_ms``."""
        elapsed_ms = (index + 1) * FRAME_MS
        tone = sine(
            tone_for(session.output_language),
            FRAME_SAMPLES,
            ENGINE_RATE_HZ,
            self.amplitude,
            session.output_samples,
        )
        session.output_samples += FRAME_SAMPLES
        delta = base64.b64encode(pcm16_to_bytes(tone)).decode("ascii")
        session.send(wire.output_audio_delta(delta, elapsed_ms), self.delay_s)
        return elapsed_ms

    def on_frame(self, session: FakeSession, index: int, frame: bytes) -> None:
        """Emit tone audio plus transcript deltas for a speech frame."""
        if not self.is_speech(frame):
            return
        elapsed_ms = self.send_tone(session, index)
        word = OUTPUT_WORDS.get(session.output_language, OTHER_WORD)
        session.send(
            wire.transcript_delta("session.output_transcript.delta", word, elapsed_ms), self.delay_s
        )
        if session.transcription_model is not None:
            session.send(
                wire.transcript_delta("session.input_transcript.delta", INPUT_WORD, elapsed_ms),
                self.delay_s,
            )


class FakeTranslationServer:
    """The WebSocket server. Use as a context manager or call ``start()``/``stop()``."""

    # The endpoints served (a subclass may serve more on the same port).
    paths: tuple[str, ...] = (TRANSLATION_PATH,)

    def __init__(
        self, script: TranslationScript | None = None, *, api_key: str | None = None
    ) -> None:
        self.script: TranslationScript = script if script is not None else ToneTranslator()
        self.api_key = api_key
        self.refuse_status: int | None = None  # e.g. 503: refuse new handshakes
        # "reject": answer every session.update with an error; "close": close the socket (1011)
        # on it; "drop": apply it, answer, then close the socket (1011). None: apply it.
        self.config_fault: str | None = None
        self.malformed = False  # send wire.MALFORMED_MESSAGES after each session.updated
        self.rejected_handshakes: list[tuple[int, str]] = []
        self._sessions: list[FakeSession] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._server: Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._port = 0

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Bind 127.0.0.1 on a free port and serve in a background thread."""
        if self._server is not None:
            return
        server = serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            close_timeout=2,
            ping_interval=None,
            max_size=None,
        )
        inner = server.handler

        def tracked(sock: socket.socket, addr: Any) -> None:
            with self._lock:
                self._threads.append(threading.current_thread())
            inner(sock, addr)

        server.handler = tracked
        self._server = server
        self._port = int(server.socket.getsockname()[1])
        self._serve_thread = threading.Thread(
            target=server.serve_forever, name="fake-oai-serve", daemon=True
        )
        self._serve_thread.start()

    def stop(self) -> None:
        """Stop accepting, close every live socket (1001) and join all threads. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        if self._serve_thread is not None:
            self._serve_thread.join(_JOIN_TIMEOUT_S)
        for session in self.sessions:
            if not session.ended.is_set():
                try:
                    session.drop(1001)
                except Exception:  # best effort during teardown; the join below bounds it
                    logger.debug("closing session %s failed", session.id, exc_info=True)
        with self._lock:
            threads = list(self._threads)
        deadline = time.monotonic() + _JOIN_TIMEOUT_S
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FakeTranslationServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (0 before ``start()``)."""
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the SDK's ``base_url``."""
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def sessions(self) -> list[FakeSession]:
        """A snapshot of all sessions so far, in connection order."""
        with self._lock:
            return list(self._sessions)

    def live_sessions(self) -> list[FakeSession]:
        """Sessions whose socket is still open."""
        return [s for s in self.sessions if not s.ended.is_set()]

    def wait_for_sessions(self, n: int, timeout: float = 5.0) -> list[FakeSession]:
        """Wait until at least ``n`` sessions connected; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._sessions) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self._sessions)} of {n} sessions connected")
                self._changed.wait(remaining)
            return list(self._sessions)

    def drop_all(self, code: int | None = 1011) -> None:
        """Close every live socket now: with ``code``, or abruptly (1006) when None."""
        for session in self.live_sessions():
            session.drop(code)

    # -- handshake and connection -----------------------------------------------------------
    def _reject(
        self, connection: ServerConnection, status: int, message: str, code: str | None
    ) -> Response:
        self.rejected_handshakes.append((status, message))
        body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        }
        response = connection.respond(status, json.dumps(body))
        response.headers["Content-Type"] = "application/json"
        return response

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.refuse_status is not None:
            return self._reject(connection, self.refuse_status, "Service unavailable.", None)
        url = urlsplit(request.path)
        if url.path not in self.paths:
            return self._reject(connection, 404, f"Invalid URL (GET {url.path})", None)
        auth = request.headers.get("Authorization", "")
        key = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        if not key:
            return self._reject(connection, 401, "You didn't provide an API key.", None)
        if self.api_key is not None and key != self.api_key:
            return self._reject(connection, 401, "Incorrect API key provided.", "invalid_api_key")
        if not parse_qs(url.query).get("model"):
            return self._reject(
                connection,
                400,
                "Missing required parameter: 'model'.",
                "missing_required_parameter",
            )
        return None

    def _handle(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        model = parse_qs(urlsplit(request.path).query)["model"][0]
        session = FakeSession(connection, model, dict(request.headers.raw_items()))
        with self._changed:
            self._sessions.append(session)
            self._changed.notify_all()
        self._serve(
            connection,
            session,
            wire.session_event("session.created", session.session_json()),
            lambda message: self._on_message(session, message),
            lambda: self.script.on_connect(session),
        )

    @staticmethod
    def _serve(
        connection: ServerConnection,
        session: FakeSession,
        created: dict[str, Any],
        on_message: Callable[[str | bytes], None],
        on_connect: Callable[[], None] = lambda: None,
    ) -> None:
        """Run one connection: greet, read until it closes, record how it ended."""
        session.start_writer()
        session.send(created)
        try:
            on_connect()
            for message in connection:
                on_message(message)
        except ConnectionClosed:
            pass  # abnormal close; recorded below
        finally:
            session.close_code = connection.close_code
            session.stop_writer()
            session.ended.set()

    def _on_message(self, session: FakeSession, message: str | bytes) -> None:
        now = time.monotonic()
        try:
            event = wire.parse_client_event(message)
        except wire.ClientEventError as err:
            raw = message if isinstance(message, str) else repr(message[:64])
            session.invalid_events.append((raw, err.code, err.message))
            session.send(
                wire.error_event(
                    "invalid_request_error", err.code, err.message, err.param, err.event_id
                )
            )
            return
        session.received_events.append((now, event.model_dump(exclude_unset=True)))
        if session.closed_by_client:
            return  # after session.close the server only finishes flushing
        if isinstance(event, RealtimeTranslationSessionUpdateEvent):
            self._on_update(session, event)
        elif isinstance(event, RealtimeTranslationInputAudioBufferAppendEvent):
            self._on_append(session, event, now)
        elif isinstance(event, RealtimeTranslationSessionCloseEvent):
            session.closed_by_client = True
            for frame in session.take_frames(b"", flush=True):
                self._consume(session, frame)
            self.script.on_close(session)
            session.send(wire.closed_event(), max(0.0, session.last_due() - time.monotonic()))
            session.close_connection(1000, "session closed", 0.0)

    def config_faulted(self, session: FakeSession, event_id: str | None) -> bool:
        """Apply :attr:`config_fault` to a ``session.update``; True if it was not applied."""
        if self.config_fault == "reject":
            session.send(wire.config_refusal(event_id))
        elif self.config_fault == "close":
            session.close_connection(1011, "closed while configuring")
        return self.config_fault in ("reject", "close")

    def updated(self, session: FakeSession, event: dict[str, Any]) -> None:
        """Answer an applied ``session.update`` (then the malformed messages, if asked)."""
        session.send(event)
        if self.malformed:
            for raw in wire.MALFORMED_MESSAGES:
                session.send_raw(raw)
        if self.config_fault == "drop":
            session.close_connection(1011, "dropped after configuring")

    def _on_update(
        self, session: FakeSession, event: RealtimeTranslationSessionUpdateEvent
    ) -> None:
        if self.config_faulted(session, event.event_id):
            return
        update = event.model_dump(exclude_unset=True)["session"]
        audio = event.session.audio
        language = audio.output.language if audio and audio.output else None
        if language is not None and language not in wire.OUTPUT_LANGUAGES:
            message = f"Invalid value: '{language}'. Supported values are: " + ", ".join(
                sorted(wire.OUTPUT_LANGUAGES)
            )
            session.invalid_events.append((event.to_json(), "invalid_value", message))
            session.send(
                wire.error_event(
                    "invalid_request_error",
                    "invalid_value",
                    message,
                    "session.audio.output.language",
                    event.event_id,
                )
            )
            return
        session.updates.append(update)
        audio_update = update.get("audio") or {}
        if "language" in (audio_update.get("output") or {}):
            session.output_language = language
        input_update = audio_update.get("input") or {}
        if "transcription" in input_update:
            transcription = input_update["transcription"]
            session.transcription_model = transcription["model"] if transcription else None
        if "noise_reduction" in input_update:
            session.noise_reduction = input_update["noise_reduction"]
        self.updated(session, wire.session_event("session.updated", session.session_json()))

    def _on_append(
        self,
        session: FakeSession,
        event: RealtimeTranslationInputAudioBufferAppendEvent,
        now: float,
    ) -> None:
        try:
            audio = base64.b64decode(event.audio, validate=True)
        except ValueError:
            audio = None
        if audio is None or len(audio) % 2:
            message = "Invalid 'audio': expected base64 of 24 kHz PCM16 LE mono."
            session.invalid_events.append((event.audio[:64], "invalid_value", message))
            session.send(
                wire.error_event(
                    "invalid_request_error", "invalid_value", message, "audio", event.event_id
                )
            )
            return
        session.appends.append(AppendRecord(len(audio), now))
        self.script.on_append(session, audio)
        for frame in session.take_frames(audio, flush=False):
            self._consume(session, frame)

    def _consume(self, session: FakeSession, frame: bytes) -> None:
        index = session.frames_consumed
        session.frames_consumed += 1
        self.script.on_frame(session, index, frame)
