"""Twilio's side of one bidirectional Media Stream (``<Connect><Stream>``), as a WebSocket client.

The messages themselves (what is sent, what is wrong with what the bridge sends) are
:mod:`bridge.sim.media_wire`; here is when they are sent and what they do to the call leg.

Concurrency: one writer thread owns every send (``connected``, ``start``, a ``media`` frame every
20 ms anchored to the start time, mark echoes, ``stop``); one reader thread parses what the bridge
sends, records it, and feeds the simulated playout buffer. They share state under one lock and
the writer sleeps on a condition, so a mark or ``clear`` wakes it at once.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from bridge.audio.pcm import (
    TWILIO_FRAME_BYTES,
    TWILIO_RATE_HZ,
    ULAW_SILENCE,
    Pcm16,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)
from bridge.sim import media_wire as wire
from bridge.sim.playout import PlayoutBuffer
from bridge.sim.rest import new_sid
from bridge.sim.webhooks import sign

logger = logging.getLogger(__name__)

FRAME_S = 0.020
# Twilio's outbound buffer holds about ten minutes; beyond that it drops audio (31931).
MAX_BUFFERED_S = 600.0
_POLL_S = 0.1
_JOIN_TIMEOUT_S = 5.0
# A stream that stops reading keeps its receive buffer this small, so the bridge's side fills
# within a few seconds of media instead of the megabytes loopback allows.
_WEDGED_RCVBUF_BYTES = 4096

# (frame index, the leg's own 20 ms of speech, the 20 ms it hears) -> the μ-law frame to send.
InboundFilter = Callable[[int, bytes, bytes], bytes]


@dataclass(frozen=True, slots=True)
class HeardFrame:
    """One ``media`` message from the bridge: decoded μ-law bytes and monotonic arrival time."""

    time: float
    data: bytes


def echo_mixer(gain: float) -> InboundFilter:
    """An inbound filter that adds what the leg hears, scaled by ``gain``, to its own speech."""

    def mix(_index: int, own: bytes, heard: bytes) -> bytes:
        own_pcm, heard_pcm = ulaw_to_pcm16(own).samples, ulaw_to_pcm16(heard).samples
        mixed = own_pcm.astype(np.int32) + gain * heard_pcm.astype(np.int32)
        return pcm16_to_ulaw(Pcm16(np.clip(mixed, -32768, 32767).astype(np.int16), TWILIO_RATE_HZ))

    return mix


class MediaStreamClient:
    """Play one call leg's Media Stream against the bridge.

    Recorded: ``heard_frames``, ``marks_received`` / ``marks_sent_back`` / ``clears`` (with
    monotonic times), ``violations`` (protocol errors Twilio would flag), ``handshake_error``.
    ``end_reason`` is ``"server_closed"`` when the bridge closed the socket, else the reason given
    to :meth:`stop` (``"hangup"``, ``"completed"``, ``"redirect"``, ``"shutdown"``…).
    """

    def __init__(
        self,
        url: str,
        *,
        connect_url: str | None = None,
        auth_token: str,
        account_sid: str,
        call_sid: str,
        parameters: Mapping[str, str],
        audio: bytes = b"",
        inbound_filter: InboundFilter | None = None,
        echo_delay_s: float = 0.0,
        stop_reading_after_s: float | None = None,
        label: str = "",
    ) -> None:
        parts = urlsplit(url)
        # Twilio drops a query string from the stream URL; data must travel as <Parameter>s.
        self.url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        self.dropped_query = parts.query
        # Signed for ``url`` (what Twilio was told), sent to ``connect_url`` (behind a balancer).
        self.connect_url = self.url if connect_url is None else connect_url
        self.auth_token = auth_token
        self.account_sid = account_sid
        self.call_sid = call_sid
        self.parameters = dict(parameters)
        self.audio = audio
        self.inbound_filter = inbound_filter
        self.echo_delay_s = echo_delay_s
        # A wedged peer: from this long after the start, nothing more is read (sending goes on).
        self.stop_reading_after_s = stop_reading_after_s
        self.label = label
        self.stream_sid = new_sid("MZ")
        self.started_at: float | None = None
        self.handshake_error: str | None = None
        self.end_reason: str | None = None
        self.violations: list[str] = []
        self.heard_frames: list[HeardFrame] = []
        self.marks_received: list[tuple[str, float]] = []
        self.marks_sent_back: list[tuple[str, float]] = []
        self.clears: list[float] = []
        self.media_sent = 0
        self._odd_size_seen = False
        self._overfull_seen = False
        self.closed = threading.Event()
        self.closed_by_server = threading.Event()
        self.playout = PlayoutBuffer()
        self._ws: ClientConnection | None = None
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._stop_reason: str | None = None
        self._writer_done = False
        self._threads: list[threading.Thread] = []

    # -- public control ----------------------------------------------------------------------
    def open(self, timeout: float = 5.0) -> bool:
        """Connect (signed) and start streaming; False (with ``handshake_error``) if refused."""
        headers = {"X-Twilio-Signature": sign(self.auth_token, self.url, {})}
        try:
            wedged = self.stop_reading_after_s is not None
            self._ws = connect(
                self.connect_url,
                sock=self._wedged_socket(timeout) if wedged else None,
                additional_headers=headers,
                open_timeout=timeout,
                close_timeout=2,
                ping_interval=None,
                compression=None,
                proxy=None,
            )
        except InvalidStatus as exc:
            self.handshake_error = f"HTTP {exc.response.status_code}"
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            self.handshake_error = f"{type(exc).__name__}: {exc}"
        if self._ws is None:
            self.end_reason = "handshake_failed"
            self.closed.set()
            return False
        for target, name in ((self._write_loop, "writer"), (self._read_loop, "reader")):
            thread = threading.Thread(
                target=target, name=f"sim-twilio-{self.label}-{name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return True

    def _wedged_socket(self, timeout: float) -> socket.socket:
        """A connected socket with a small receive buffer (set before connecting: the window
        is agreed in the handshake)."""
        parts = urlsplit(self.connect_url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _WEDGED_RCVBUF_BYTES)
        sock.settimeout(timeout)
        try:
            sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
        except OSError:
            sock.close()
            raise
        sock.settimeout(None)
        return sock

    def stop(self, reason: str) -> None:
        """Twilio ends the stream: send ``stop`` and close the socket. Idempotent."""
        with self._wakeup:
            if self._stop_reason is None and self.end_reason is None:
                self._stop_reason = reason
            self._wakeup.notify_all()

    def join(self, timeout: float = _JOIN_TIMEOUT_S) -> None:
        """Wait for both threads to end."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def heard_ulaw(self) -> bytes:
        """Every μ-law byte received from the bridge, in order."""
        return b"".join(frame.data for frame in list(self.heard_frames))

    def played_ulaw(self) -> bytes:
        """What the listener has heard by now (received audio minus what ``clear`` dropped)."""
        with self._lock:
            return self.playout.played(time.monotonic())

    def heard_timeline(self, origin: float, seconds: float) -> bytes:
        """What the listener heard from monotonic ``origin`` on, ``seconds`` long: μ-law with
        silence wherever nothing played, so positions in it are real times."""
        with self._lock:
            return self.playout.window(origin, round(seconds * TWILIO_RATE_HZ))

    def frame_sizes(self) -> list[int]:
        """Byte length of each received ``media`` payload."""
        return [len(frame.data) for frame in list(self.heard_frames)]

    # -- writer ------------------------------------------------------------------------------
    def _send(self, message: str) -> None:
        assert self._ws is not None
        self._ws.send(message)

    def _inbound_frame(self, index: int, due: float) -> bytes:
        """The leg's ``index``-th 20 ms of speech (line silence once its audio is over), through
        its inbound filter with what it heard a frame earlier."""
        own = self.audio[index * TWILIO_FRAME_BYTES : (index + 1) * TWILIO_FRAME_BYTES]
        own += bytes([ULAW_SILENCE]) * (
            TWILIO_FRAME_BYTES - len(own)
        )  # a phone line never goes quiet
        if self.inbound_filter is not None:
            with self._lock:
                heard = self.playout.window(due - FRAME_S - self.echo_delay_s, TWILIO_FRAME_BYTES)
            own = self.inbound_filter(index, own, heard)
        return own

    def _next_step(self, media_due: float) -> tuple[str | None, list[str], bool]:
        """Block until a mark or a media frame is due or a stop is asked for."""
        with self._wakeup:
            while True:
                now = time.monotonic()
                if self._stop_reason is not None or self.closed_by_server.is_set():
                    return self._stop_reason, [], False
                marks = self.playout.pop_due_marks(now)
                if marks or now >= media_due:
                    return None, marks, now >= media_due
                next_due = min(media_due, self.playout.next_mark_due() or math.inf)
                self._wakeup.wait(min(next_due - now, _POLL_S))

    def _write_loop(self) -> None:
        seq = 1
        try:
            self._send(wire.connected_message())
            self._send(
                wire.start_message(
                    seq, self.stream_sid, self.account_sid, self.call_sid, self.parameters
                )
            )
            self.started_at = started = time.monotonic()
            index = 0
            while True:
                due = started + index * FRAME_S  # anchored: no drift, catches up after a stall
                stop_reason, marks, media_due = self._next_step(due)
                if stop_reason is not None:
                    seq += 1
                    self._send(
                        wire.stop_message(seq, self.stream_sid, self.account_sid, self.call_sid)
                    )
                    assert self._ws is not None
                    self._ws.close()
                    return
                if self.closed_by_server.is_set():
                    return
                for name in marks:
                    seq += 1
                    self._send(wire.mark_message(seq, self.stream_sid, name))
                    self.marks_sent_back.append((name, time.monotonic()))
                if media_due:
                    seq += 1
                    frame = self._inbound_frame(index, due)
                    self._send(wire.media_message(seq, self.stream_sid, index, frame))
                    self.media_sent += 1
                    index += 1
        except ConnectionClosed:
            pass  # the bridge closed the socket; the reader records it
        except Exception:  # thread boundary: record, never kill the test run
            logger.exception("media stream writer %s failed", self.label)
            self.violations.append("internal: writer failed")
        finally:
            with self._wakeup:
                self._writer_done = True
                self._wakeup.notify_all()

    # -- reader ------------------------------------------------------------------------------
    def _stop_reading(self) -> None:
        """A wedged peer takes nothing more off the socket (websockets' own reader stops too,
        once its queue is full) until the stream ends from the sending side."""
        with self._wakeup:
            while self._stop_reason is None and not self._writer_done:
                self._wakeup.wait(_POLL_S)

    def _read_loop(self) -> None:
        assert self._ws is not None
        try:
            while True:
                if (
                    self.stop_reading_after_s is not None
                    and self.started_at is not None
                    and time.monotonic() - self.started_at >= self.stop_reading_after_s
                ):
                    self._stop_reading()
                    self.stop_reading_after_s = None  # then read what is left, and the end
                try:
                    message = self._ws.recv(timeout=_POLL_S)
                except TimeoutError:
                    continue  # the socket's close (ours or theirs) ends the loop below
                self._on_message(message, time.monotonic())
        except ConnectionClosed:
            pass
        except Exception:  # thread boundary
            logger.exception("media stream reader %s failed", self.label)
            self.violations.append("internal: reader failed")
        finally:
            with self._wakeup:
                if self._stop_reason is None:
                    self.end_reason = "server_closed"
                    self.closed_by_server.set()
                else:
                    self.end_reason = self._stop_reason
                self._wakeup.notify_all()
            self.closed.set()

    def _violation(self, text: str) -> None:
        logger.info("stream %s violation: %s", self.label, text)
        self.violations.append(text)

    def _on_message(self, message: str | bytes, now: float) -> None:
        received, problems = wire.read_message(message, self.stream_sid)
        for problem in problems:
            self._violation(problem)
        if isinstance(received, wire.Media):
            self._on_media(received.ulaw, now)
        elif isinstance(received, wire.Mark):
            self.marks_received.append((received.name, now))
            with self._wakeup:
                self.playout.add_mark(received.name, now)
                self._wakeup.notify_all()
        elif isinstance(received, wire.Clear):
            self.clears.append(now)
            with self._wakeup:
                self.playout.clear(now)
                self._wakeup.notify_all()

    def _on_media(self, data: bytes, now: float) -> None:
        if data[:4] == b"RIFF":
            self._violation("media payload starts with a WAV header (raw μ-law only)")
        elif len(data) % TWILIO_FRAME_BYTES and not self._odd_size_seen:
            # Twilio plays any size, but irregular chunks are reported to sound choppy; once.
            self._odd_size_seen = True
            self._violation(f"media payload of {len(data)} bytes: not whole 20 ms frames")
        self.heard_frames.append(HeardFrame(now, data))
        with self._wakeup:
            self.playout.enqueue(data, now)
            overfull = self.playout.unplayed_s(now) > MAX_BUFFERED_S
            self._wakeup.notify_all()
        if overfull and not self._overfull_seen:
            self._overfull_seen = True
            self._violation("31931: over 10 minutes of audio buffered; Twilio discards it")
