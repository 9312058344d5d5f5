"""One party's side of a call: its Media Stream socket and the audio written into it.

Concurrency: the Media Stream's request thread only *reads* the socket. A per-leg writer
thread is the socket's single writer: it drains the leg's :class:`Playout` (frames, marks) and
is the one that closes the socket. Audio for the leg (``play``) arrives from the engine's
threads; the leg owns the 24 → 8 kHz resampler of that outbound stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal, Protocol

from bridge.audio import ENGINE_RATE_HZ, TWILIO_RATE_HZ, Pcm16, pcm16_to_ulaw
from bridge.logs import call_logger
from bridge.metrics import Metrics
from bridge.playout import Frame, Playout
from bridge.resample import Downsampler24kTo8k
from bridge.twilio_media import mark_message, media_message

Role = Literal["caller", "agent"]
JOIN_TIMEOUT_S = 2.0


class MediaSocket(Protocol):
    """What the leg needs of a WebSocket (flask-sock's ``simple_websocket.Server``)."""

    def send(self, data: str) -> None: ...

    def close(self, reason: int | None = None, message: str | None = None) -> None: ...


class CallLeg:
    def __init__(
        self,
        call_sid: str,
        role: Role,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.role: Role = role
        self._log = call_logger(__name__, call_sid, role)
        self._metrics = metrics
        self._clock = clock
        self._cond = threading.Condition()
        self._playout = Playout(observe=self._observe, mark_prefix=f"{role[0]}")
        self._downsampler = Downsampler24kTo8k()
        self._resample_lock = threading.Lock()
        self._ws: MediaSocket | None = None
        self._stream_sid: str | None = None
        self._writer: threading.Thread | None = None
        self._closing = False
        self._close_code: int | None = None
        self.marks_heard = 0
        self._tag = f"{call_sid[-6:]}-{role}"

    @property
    def attached(self) -> bool:
        return self._ws is not None

    def attach(self, ws: MediaSocket, stream_sid: str) -> bool:
        """Bind the leg to its Media Stream and start writing; False if already bound/closed."""
        with self._cond:
            if self._ws is not None or self._closing:
                return False
            self._ws = ws
            self._stream_sid = stream_sid
            self._writer = threading.Thread(
                target=self._run_writer, name=f"leg-writer:{self._tag}", daemon=True
            )
            self._writer.start()
        return True

    def play(self, audio: Pcm16, received_at: float) -> None:
        """Queue audio for this party to hear (24 kHz from the engine, or 8 kHz from relay).

        Two engine sessions can deliver at once (the old one flushing while its replacement
        starts), so the stateful resampler is used under its own lock.
        """
        with self._resample_lock:
            if audio.rate_hz == ENGINE_RATE_HZ:
                audio = Pcm16(self._downsampler.process(audio.samples), TWILIO_RATE_HZ)
            elif audio.rate_hz != TWILIO_RATE_HZ:
                raise ValueError(f"cannot play {audio.rate_hz} Hz audio")
            ulaw = pcm16_to_ulaw(audio)
        with self._cond:
            if self._closing:
                return
            dropped_before = self._playout.dropped_bytes
            self._playout.push(ulaw, received_at)
            dropped = self._playout.dropped_bytes - dropped_before
            self._cond.notify()
        if dropped:
            self._metrics.audio_dropped_seconds.labels("playout_backlog").inc(
                dropped / TWILIO_RATE_HZ
            )

    def on_mark(self, name: str) -> None:
        """Twilio played everything we queued before mark ``name``."""
        self.marks_heard += 1
        self._log.debug("heard up to mark %s", name)

    def close(self, close_code: int | None = None) -> None:
        """Stop writing and close the socket (by the writer thread). Idempotent."""
        with self._cond:
            if not self._closing:
                self._close_code = close_code
            self._closing = True
            self._cond.notify()
            writer = self._writer
        if writer is None:
            return
        if writer is not threading.current_thread():
            writer.join(JOIN_TIMEOUT_S)

    def _observe(self, edge: str, seconds: float) -> None:
        self._metrics.audio_to_twilio.labels(edge).observe(seconds)

    def _run_writer(self) -> None:
        ws, stream_sid = self._ws, self._stream_sid
        assert ws is not None and stream_sid is not None
        frames = self._metrics.frames_sent.labels(self.role)
        try:
            while True:
                with self._cond:
                    while not self._closing:
                        out, wait = self._playout.due(self._clock())
                        if out:
                            break
                        self._cond.wait(wait)
                    if self._closing:
                        return
                for item in out:
                    if isinstance(item, Frame):
                        ws.send(media_message(stream_sid, item.ulaw))
                        frames.inc()
                    else:
                        ws.send(mark_message(stream_sid, item.name))
        except Exception as exc:  # noqa: BLE001 - thread boundary: a dead socket ends the leg
            self._log.info("media socket write ended: %s", type(exc).__name__)
        finally:
            try:
                ws.close(reason=self._close_code)
            except Exception:  # noqa: BLE001 - already closed by the peer
                self._log.debug("closing media socket raised", exc_info=True)
