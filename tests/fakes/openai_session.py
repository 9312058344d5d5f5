"""One session of the translation stand-in: its recorded state and its scheduled outbox.

Every socket has exactly one writer: the session's writer thread drains a heap of outgoing items
ordered by due time (then by insertion), so scripted delays never block the reader thread that
validates client events. ``close_connection`` is ordered like any event; ``drop`` acts at once.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection

from tests.fakes import openai_events as wire

logger = logging.getLogger(__name__)

FRAME_MS = 200
FRAME_SAMPLES = 24000 * FRAME_MS // 1000  # 4800 samples of 24 kHz PCM16
FRAME_BYTES = FRAME_SAMPLES * 2
_JOIN_TIMEOUT_S = 5.0
# Translated audio out: the translation endpoint's and the realtime voice endpoint's.
AUDIO_DELTA_TYPES = frozenset({"session.output_audio.delta", "response.output_audio.delta"})
_POLL_S = 0.25


@dataclass(frozen=True, slots=True)
class AppendRecord:
    """One ``session.input_audio_buffer.append`` as received."""

    n_bytes: int
    time: float


@dataclass(frozen=True, slots=True)
class _Close:
    code: int | None  # None: abrupt, no close frame
    reason: str


@dataclass(order=True)
class _Outgoing:
    due: float
    seq: int
    event: dict[str, Any] | None = field(compare=False, default=None)
    close: _Close | None = field(compare=False, default=None)
    raw: str | None = field(compare=False, default=None)  # sent as is (malformed on purpose)


class FakeSession:
    """One translation WebSocket session: state, recordings and a scheduled outbox.

    Recorded (all times are ``time.monotonic()``): ``received_events`` (time, parsed JSON),
    ``invalid_events`` (raw text, error code, message), ``appends``, ``received_audio``
    (24 kHz PCM16 LE), ``sent_events`` (time, event), ``sent_deltas`` (event_id, time),
    ``updates`` (the ``session`` objects of ``session.update``).
    """

    def __init__(self, connection: ServerConnection, model: str, headers: dict[str, str]) -> None:
        self.id = wire.new_id("sess")
        self.model = model
        self.headers = headers
        self.connected_at = time.monotonic()
        self.expires_at = wire.expiry_from_now()
        self.output_language: str | None = None
        self.transcription_model: str | None = None
        self.noise_reduction: dict[str, Any] | None = None
        self.updates: list[dict[str, Any]] = []
        self.received_events: list[tuple[float, dict[str, Any]]] = []
        self.invalid_events: list[tuple[str, str, str]] = []
        self.appends: list[AppendRecord] = []
        self.received_audio = bytearray()
        self.frames_consumed = 0
        self.sent_events: list[tuple[float, dict[str, Any]]] = []
        self.sent_deltas: list[tuple[str, float]] = []
        self.closed_by_client = False
        self.close_code: int | None = None
        self.ended = threading.Event()
        self.script_state: dict[str, Any] = {}
        self.output_samples = 0  # tone phase, so consecutive deltas join without clicks
        self._connection = connection
        self._pending_input = bytearray()
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._outbox: list[_Outgoing] = []
        self._seq = 0
        self._stopping = False
        self._closing = False
        self._writer = threading.Thread(
            target=self._write_loop, name=f"fake-oai-{self.id}", daemon=True
        )

    # -- outbox (any thread) -------------------------------------------------------------
    def send(self, event: dict[str, Any], delay_s: float = 0.0) -> None:
        """Queue ``event`` to be sent ``delay_s`` from now (FIFO among equal due times)."""
        self._schedule(_Outgoing(time.monotonic() + delay_s, 0, event=event))

    def send_raw(self, text: str, delay_s: float = 0.0) -> None:
        """Queue a text message sent exactly as given (tests of malformed server events)."""
        self._schedule(_Outgoing(time.monotonic() + delay_s, 0, raw=text))

    def send_error(
        self,
        code: str | None,
        message: str,
        error_type: str = "server_error",
        param: str | None = None,
        delay_s: float = 0.0,
    ) -> None:
        """Queue an ``error`` event."""
        self.send(wire.error_event(error_type, code, message, param), delay_s)

    def close_connection(
        self, code: int | None = 1011, reason: str = "", delay_s: float = 0.0
    ) -> None:
        """Queue closing the socket: with a close ``code``, or abruptly (no close frame, the
        client sees 1006) when ``code`` is None. Ordered after everything queued before it."""
        self._schedule(_Outgoing(time.monotonic() + delay_s, 0, close=_Close(code, reason)))

    def drop(self, code: int | None) -> None:
        """Close the socket now (from the calling thread), with ``code`` or abruptly."""
        if code is None:
            _shutdown_socket(self._connection)
        else:
            self._connection.close(code, "dropped by test")

    def last_due(self) -> float:
        """When the last queued item is due (now if the outbox is empty)."""
        with self._lock:
            return max([time.monotonic(), *(item.due for item in self._outbox)])

    def audio_snapshot(self) -> bytes:
        """A copy of all input audio received so far."""
        with self._lock:
            return bytes(self.received_audio)

    # -- reader side -----------------------------------------------------------------------
    def take_frames(self, audio: bytes, flush: bool) -> list[bytes]:
        """Add input audio and return the complete 200 ms frames (padding the rest if flush)."""
        with self._lock:
            self._pending_input.extend(audio)
            self.received_audio.extend(audio)
            if flush and self._pending_input:
                pad = FRAME_BYTES - len(self._pending_input) % FRAME_BYTES
                self._pending_input.extend(bytes(pad % FRAME_BYTES))
            frames = []
            while len(self._pending_input) >= FRAME_BYTES:
                frames.append(bytes(self._pending_input[:FRAME_BYTES]))
                del self._pending_input[:FRAME_BYTES]
            return frames

    def session_json(self) -> dict[str, Any]:
        """The session object as ``session.created``/``session.updated`` report it."""
        return wire.session_object(
            self.id,
            self.model,
            self.expires_at,
            self.output_language,
            self.transcription_model,
            self.noise_reduction,
        )

    # -- writer ----------------------------------------------------------------------------
    def _schedule(self, item: _Outgoing) -> None:
        with self._wakeup:
            if self._closing or self._stopping:
                return  # nothing is sent after a queued close, as on a real socket
            self._seq += 1
            item.seq = self._seq
            self._closing = item.close is not None
            heapq.heappush(self._outbox, item)
            self._wakeup.notify()

    def start_writer(self) -> None:
        """Start the writer thread (the reader calls this once the handshake is done)."""
        self._writer.start()

    def stop_writer(self) -> None:
        """Stop the writer, dropping anything still queued, and join it."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._writer.is_alive() and self._writer is not threading.current_thread():
            self._writer.join(_JOIN_TIMEOUT_S)

    def _next_due_item(self) -> _Outgoing | None:
        with self._wakeup:
            while not self._stopping:
                now = time.monotonic()
                if self._outbox and self._outbox[0].due <= now:
                    return heapq.heappop(self._outbox)
                wait = self._outbox[0].due - now if self._outbox else _POLL_S
                self._wakeup.wait(min(wait, _POLL_S))
            return None

    def _write_loop(self) -> None:
        try:
            while (item := self._next_due_item()) is not None:
                if item.close is not None:
                    if item.close.code is None:
                        _shutdown_socket(self._connection)
                    else:
                        self._connection.close(item.close.code, item.close.reason)
                    return
                if item.raw is not None:
                    self._connection.send(item.raw)
                    continue
                assert item.event is not None
                # Recorded before the send: the client may act on the event (and a test
                # look for its record) before send() returns here.
                sent_at = time.monotonic()
                with self._lock:
                    self.sent_events.append((sent_at, item.event))
                    if item.event.get("type") in AUDIO_DELTA_TYPES:
                        self.sent_deltas.append((str(item.event["event_id"]), sent_at))
                self._connection.send(json.dumps(item.event))
        except ConnectionClosed:
            pass  # the client went away; the reader records how
        except Exception:  # a thread boundary: log, never kill the test process
            logger.exception("fake translation writer failed")


def _shutdown_socket(connection: ServerConnection) -> None:
    # shutdown() without a close frame: the peer sees EOF, i.e. close code 1006.
    with contextlib.suppress(OSError):  # already closed
        connection.socket.shutdown(socket.SHUT_RDWR)
