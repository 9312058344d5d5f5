"""A loopback stand-in for GPT Translator's Realtime Translation API (Socket.IO).

``FakeGptTranslator`` serves the documented namespace ``/api/realtime-translator`` on 127.0.0.1
(python-socketio's server in threading mode, websocket transport through simple-websocket, under
werkzeug's threaded WSGI server on port 0). It speaks the protocol as GPT Translator's API
document describes it, written here from the document rather than from ``bridge``'s wire module
so that it checks the bridge instead of sharing its mistakes:

* the connection's ``apiKey`` query parameter must be the key, or the namespace connection is
  refused ("rejected immediately");
* ``translation_start {targetLanguage}`` → ``session_initializing``, ``translation_ready``,
  ``ready_for_audio`` (after ``ready_delay_s``), unless the balance is already exhausted:
  then ``insufficient_tokens`` and ``translation_closed``;
* ``audio_chunk {audioData}`` must come after ``ready_for_audio`` and be base64 PCM16 of whole
  samples; anything else is recorded in the session's ``violations``;
* every 100 ms of speech (RMS above a threshold) becomes 100 ms of a tone at
  ``tone_for(targetLanguage)`` as ``output_audio`` at 24 kHz, plus ``output_transcript`` and
  ``input_transcript`` deltas; silence produces nothing;
* tokens: ``tokens_per_second`` (default 50, the document's ~3 000 a minute) per second of audio
  received, a stand-in for the document's per-second billing of a session that streams in real
  time; when ``balance`` runs out → ``insufficient_tokens {message, remainingTokens: 0}``,
  ``translation_closed``, and the server disconnects the client;
* ``translation_stop`` → ``translation_closed``.

Threads: werkzeug's serving thread, one thread per connection (simple-websocket), and
python-socketio's; the server handles each client's events in order (``async_handlers=False``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

import socketio
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from tests.fakes.audio import ENGINE_RATE_HZ, pcm16_from_bytes, pcm16_to_bytes, rms, sine
from tests.fakes.openai_translate import tone_for

NAMESPACE = "/api/realtime-translator"
API_KEY = "gptt-test-key-5d1e"
FRAME_SAMPLES = ENGINE_RATE_HZ // 10  # the stand-in "translates" 100 ms at a time
OUTPUT_WORDS = {"en": "hello ", "es": "hola "}
INPUT_WORD = "speech "
_JOIN_TIMEOUT_S = 5.0
_CLIENT_CLOSES = frozenset(
    {socketio.Server.reason.CLIENT_DISCONNECT, socketio.Server.reason.TRANSPORT_CLOSE}
)

log = logging.getLogger(__name__)


@dataclass
class FakeGptSession:
    """One translation session (one ``translation_start``) as the stand-in saw it."""

    sid: str
    target_language: str
    started_at: float = field(default_factory=time.monotonic)
    ready_at: float | None = None
    audio: bytearray = field(default_factory=bytearray)
    chunk_bytes: list[int] = field(default_factory=list)
    # (monotonic time an output_audio delta was emitted, its PCM16 bytes)
    deltas_sent: list[tuple[float, int]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    stop_received: bool = False
    disconnect_reason: str | None = None  # python-socketio's, once the client has gone
    out_of_tokens: bool = False
    output_samples: int = 0
    consumed: int = 0  # bytes of ``audio`` already turned into output

    @property
    def received_ms(self) -> float:
        return 1000.0 * len(self.audio) / 2 / ENGINE_RATE_HZ

    @property
    def ended_cleanly(self) -> bool:
        """The documented end: ``translation_stop``, then the client disconnected.

        python-socketio's client closes the WebSocket right after queueing its namespace
        DISCONNECT packet, so the server sees either reason for the same clean end."""
        return self.stop_received and self.disconnect_reason in _CLIENT_CLOSES


class _QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        """Test output stays readable: no request lines."""


class _Namespace(socketio.Namespace):
    def __init__(self, server: FakeGptTranslator) -> None:
        super().__init__(NAMESPACE)
        self._fake = server

    def trigger_event(self, event: str, *args: Any) -> Any:
        if event not in ("connect", "disconnect") and not hasattr(self, f"on_{event}"):
            self._fake.violation(args[0] if args else "?", f"undocumented event {event!r}")
            return None
        return super().trigger_event(event, *args)

    def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        key = parse_qs(environ.get("QUERY_STRING", "")).get("apiKey", [""])[0]
        if self._fake.refuse or key != self._fake.api_key:
            self._fake.refused += 1
            raise socketio.exceptions.ConnectionRefusedError("Invalid API key")
        self._fake.connected(sid, environ.get("werkzeug.socket"))

    def on_disconnect(self, sid: str, reason: Any = None) -> None:
        self._fake.disconnected(sid, str(reason))

    def on_translation_start(self, sid: str, data: Any = None) -> None:
        self._fake.start_session(sid, data)

    def on_audio_chunk(self, sid: str, data: Any = None) -> None:
        self._fake.audio_chunk(sid, data)

    def on_translation_stop(self, sid: str, data: Any = None) -> None:
        self._fake.stop_session(sid, data)


# Events a client must skip: fields missing or of the wrong type, an event it does not know.
MALFORMED_EVENTS: tuple[tuple[str, Any], ...] = (
    ("output_audio", {"delta": 5}),
    ("output_audio", {"delta": "not base64 !"}),
    ("output_audio", None),
    ("output_transcript", {"delta": {"x": 1}}),
    ("input_transcript", "a bare string"),
    ("insufficient_tokens_soon", {"message": "an event from the future"}),
)


class FakeGptTranslator:
    """The Socket.IO server. Use as a context manager or call ``start()``/``stop()``."""

    def __init__(self, *, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.refuse = False  # refuse every connection as a bad key would be
        # "reject": answer translation_start with translation_error; "close": disconnect the
        # client on it; "drop": start the session (ready_for_audio), then disconnect the client.
        # None: start the session.
        self.config_fault: str | None = None
        self.malformed = False  # emit MALFORMED_EVENTS after each ready_for_audio
        self.balance: int | None = None  # None: unlimited tokens
        self.tokens_per_second = 50
        self.ready_delay_s = 0.0
        self.error_after_chunks: int | None = None  # one translation_error after that many
        self.rms_threshold = 300.0
        self.amplitude = 8000.0
        self.refused = 0
        self._lock = threading.Lock()
        self._sessions: list[FakeGptSession] = []
        self._live: dict[str, FakeGptSession] = {}  # sid -> its current session
        self._sockets: dict[str, socket.socket] = {}
        self._all_violations: list[str] = []
        self.sio = socketio.Server(
            async_mode="threading", async_handlers=False, logger=False, engineio_logger=False
        )
        self.sio.register_namespace(_Namespace(self))
        self._http: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        app = socketio.WSGIApp(self.sio)
        self._http = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="fake-gptt-serve", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        http, self._http = self._http, None
        if http is None:
            return
        self.drop_all()
        http.shutdown()
        http.server_close()
        if self._thread is not None:
            self._thread.join(_JOIN_TIMEOUT_S)

    def __enter__(self) -> FakeGptTranslator:
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
    def url(self) -> str:
        """What GPT_TRANSLATOR_URL should be: the origin plus the namespace, as documented."""
        assert self._http is not None
        return f"http://127.0.0.1:{self._http.server_port}{NAMESPACE}"

    @property
    def sessions(self) -> list[FakeGptSession]:
        with self._lock:
            return list(self._sessions)

    @property
    def violations(self) -> list[str]:
        with self._lock:
            return list(self._all_violations)

    def drop_all(self) -> None:
        """Close every client's TCP connection abruptly, as a network fault would."""
        with self._lock:
            sockets = list(self._sockets.values())
            self._sockets.clear()
        for sock in sockets:
            with contextlib.suppress(OSError):  # already gone
                sock.shutdown(socket.SHUT_RDWR)

    # -- the protocol --------------------------------------------------------------------------

    def connected(self, sid: str, sock: socket.socket | None) -> None:
        with self._lock:
            if sock is not None:
                self._sockets[sid] = sock

    def disconnected(self, sid: str, reason: str) -> None:
        with self._lock:
            self._sockets.pop(sid, None)
            session = self._live.pop(sid, None)
            if session is not None:
                session.disconnect_reason = reason

    def violation(self, sid: str, what: str) -> None:
        with self._lock:
            self._all_violations.append(what)
            session = self._live.get(sid)
            if session is not None:
                session.violations.append(what)
        log.warning("GPT Translator stand-in: protocol violation: %s", what)

    def start_session(self, sid: str, data: Any) -> None:
        target = data.get("targetLanguage") if isinstance(data, dict) else None
        if not isinstance(target, str) or not target or set(data) != {"targetLanguage"}:
            self.violation(sid, f"translation_start payload {data!r}")
            self._emit(sid, "translation_error", {"message": "targetLanguage is required"})
            return
        if self.config_fault == "reject":
            self._emit(sid, "translation_error", {"message": "Unsupported target language"})
            return
        if self.config_fault == "close":
            self.sio.disconnect(sid, namespace=NAMESPACE)
            return
        with self._lock:
            if sid in self._live and not self._live[sid].stop_received:
                self._all_violations.append("translation_start while a session is active")
            session = FakeGptSession(sid, target)
            self._sessions.append(session)
            self._live[sid] = session
            exhausted = self.balance is not None and self.balance <= 0
        if exhausted:  # "your available balance is checked before a session can start"
            self._out_of_tokens(session)
            return
        self._emit(sid, "session_initializing", None)
        self._emit(sid, "translation_ready", None)
        if self.ready_delay_s:
            time.sleep(self.ready_delay_s)  # this client's events wait (async_handlers=False)
        session.ready_at = time.monotonic()
        self._emit(sid, "ready_for_audio", None)
        if self.malformed:
            for event, data in MALFORMED_EVENTS:
                self.sio.emit(event, data, to=sid, namespace=NAMESPACE)
        if self.config_fault == "drop":
            self.sio.disconnect(sid, namespace=NAMESPACE)

    def audio_chunk(self, sid: str, data: Any) -> None:
        with self._lock:
            session = self._live.get(sid)
        if session is None or session.ready_at is None or session.stop_received:
            self.violation(sid, "audio_chunk outside a session ready for audio")
            return
        encoded = data.get("audioData") if isinstance(data, dict) else None
        if not isinstance(encoded, str) or set(data) != {"audioData"}:
            self.violation(sid, "audio_chunk without a string audioData")
            return
        try:
            pcm = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            self.violation(sid, "audio_chunk audioData is not base64")
            return
        if not pcm or len(pcm) % 2:
            self.violation(sid, f"audio_chunk of {len(pcm)} bytes is not whole PCM16 samples")
            return
        with self._lock:
            session.audio.extend(pcm)
            session.chunk_bytes.append(len(pcm))
            error_now = len(session.chunk_bytes) == self.error_after_chunks
        if error_now:  # the document: "The session may still be active"
            self._emit(sid, "translation_error", {"message": "Translation session error."})
        if self._charge(session, len(pcm)):
            self._translate(session)
        else:
            self._out_of_tokens(session)

    def stop_session(self, sid: str, data: Any) -> None:
        if data is not None:
            self.violation(sid, f"translation_stop carries a payload {data!r}")
        with self._lock:
            session = self._live.get(sid)
        if session is None:
            self.violation(sid, "translation_stop without a session")
            return
        session.stop_received = True
        self._emit(sid, "translation_closed", None)

    # -- behaviour -----------------------------------------------------------------------------

    def _charge(self, session: FakeGptSession, nbytes: int) -> bool:
        """Take tokens for ``nbytes`` of audio; False when the balance is exhausted."""
        with self._lock:
            if self.balance is None:
                return True
            seconds = nbytes / 2 / ENGINE_RATE_HZ
            self.balance = max(0, self.balance - round(seconds * self.tokens_per_second))
            return self.balance > 0

    def _out_of_tokens(self, session: FakeGptSession) -> None:
        session.out_of_tokens = True
        self._emit(
            session.sid,
            "insufficient_tokens",
            {
                "message": "You have reached the limit of words for translation.",
                "remainingTokens": 0,
            },
        )
        self._emit(session.sid, "translation_closed", None)
        self.sio.disconnect(session.sid, namespace=NAMESPACE)

    def _translate(self, session: FakeGptSession) -> None:
        frame_bytes = FRAME_SAMPLES * 2
        while len(session.audio) - session.consumed >= frame_bytes:
            frame = bytes(session.audio[session.consumed : session.consumed + frame_bytes])
            session.consumed += frame_bytes
            if rms(pcm16_from_bytes(frame)) <= self.rms_threshold:
                continue
            tone = sine(
                tone_for(session.target_language),
                FRAME_SAMPLES,
                ENGINE_RATE_HZ,
                self.amplitude,
                session.output_samples,
            )
            session.output_samples += FRAME_SAMPLES
            pcm = pcm16_to_bytes(tone)
            session.deltas_sent.append((time.monotonic(), len(pcm)))
            self._emit(session.sid, "output_audio", {"delta": base64.b64encode(pcm).decode()})
            word = OUTPUT_WORDS.get(session.target_language, "word ")
            self._emit(session.sid, "output_transcript", {"delta": word})
            self._emit(session.sid, "input_transcript", {"delta": INPUT_WORD})

    def _emit(self, sid: str, event: str, data: dict[str, Any] | None) -> None:
        self.sio.emit(event, data, to=sid, namespace=NAMESPACE)
