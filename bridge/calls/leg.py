"""One party's side of a call: its Media Stream socket and what it hears.

Concurrency: the Media Stream's request thread only *reads* the socket. A per-leg writer thread is
the socket's single writer: it drains the leg's :class:`Playout` (frames, marks, clears), writes the
replies the reader queued (pongs), and is the one that closes the socket. Its writes never block
(bridge/telephony/stream_socket.py): what the socket cannot take yet is retried every
``BACKLOG_RETRY_S``, and a peer that stops reading ends the leg (``write_stalled``). Audio for the
leg arrives from other threads (the engine's readers, the other party's stream); the leg owns the 24
→ 8 kHz resampler of its outbound stream and guards it with its own lock.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from bridge.audio.echo_guard import EchoGuard
from bridge.audio.mixer import db_to_gain, scale
from bridge.audio.pcm import ENGINE_RATE_HZ, TWILIO_RATE_HZ, Pcm16, pcm16_to_ulaw
from bridge.audio.playout import ClearOut, Frame, Outbound, Playout
from bridge.audio.resample import RATE_16K_HZ, Downsampler16kTo8k, Downsampler24kTo8k
from bridge.ops.logs import call_logger
from bridge.ops.metrics import Metrics
from bridge.settings.env import Settings
from bridge.telephony.media_wire import clear_message, mark_message, media_messages
from bridge.telephony.stream_socket import WriteStalled

Role = Literal["caller", "agent"]
JOIN_TIMEOUT_S = 2.0
# A socket that took only part of what we wrote is tried again this often (one 20 ms frame):
# waiting on the socket itself would take a thread; it only happens while Twilio lags.
BACKLOG_RETRY_S = 0.02
# With the passthrough on, frames carry live audio, so Twilio's buffer is kept shallow; 100 ms
# absorbs network jitter towards Twilio. Without it, a second of translation may be queued.
LEAD_WITH_PASSTHROUGH_S = 0.1
LEAD_TRANSLATION_ONLY_S = 1.0


class MediaSocket(Protocol):
    """What the leg needs of its Media Stream socket
    (:class:`bridge.telephony.stream_socket.StreamSocket`).

    Nothing here blocks: ``send`` writes what the socket takes and keeps the rest, ``flush``
    retries it (True once nothing waits); both raise ``WriteStalled`` when the peer stopped
    reading. ``hand_over`` makes the leg's writer the owner, woken for the reader's replies.
    """

    @property
    def backlogged(self) -> bool: ...

    def hand_over(self, wake: Callable[[], None]) -> None: ...

    def send(self, data: str) -> None: ...

    def flush(self) -> bool: ...

    def close(self, reason: int | None = None, message: str | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class LegConfig:
    """The listening-experience settings a leg needs (see Settings)."""

    passthrough_db: float | None = None
    duck_db: float = 0.0
    echo_guard_db: float | None = None
    backlog_max_s: float = 10.0
    backlog_policy: str = "drop-oldest"
    # The "translation" is the other party's live voice at its own pace (ENGINE=relay): it
    # never pauses to let a backlog drain, so it is kept as shallow as live audio and nothing
    # that arrives before this leg's stream is up is queued (it would delay the whole call).
    live_source: bool = False

    @classmethod
    def from_settings(cls, s: Settings) -> LegConfig:
        return cls(
            s.passthrough_db,
            s.duck_db,
            s.echo_guard_db,
            s.backlog_max_s,
            s.backlog_policy,
            live_source=s.engine == "relay",
        )


class CallLeg:
    def __init__(
        self,
        call_sid: str,
        role: Role,
        metrics: Metrics,
        config: LegConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        config = config or LegConfig()
        self.role: Role = role
        self._log = call_logger(__name__, call_sid, role)
        self._metrics = metrics
        self._clock = clock
        self._cond = threading.Condition()
        lead = (
            LEAD_WITH_PASSTHROUGH_S
            if config.passthrough_db is not None or config.live_source
            else LEAD_TRANSLATION_ONLY_S
        )
        self._live_source = config.live_source
        self._playout = Playout(
            max_ahead_s=lead,
            backlog_max_s=config.backlog_max_s,
            policy=config.backlog_policy,
            passthrough_db=config.passthrough_db,
            duck_db=config.duck_db,
            observe=self._observe,
            mark_prefix=f"{role[0]}",
            # Relay audio comes in whole 20 ms frames at the other party's pace: no engine
            # jitter to hold its start back for.
            jitter_hold=not config.live_source,
        )
        self._guard_gain = (
            None if config.echo_guard_db is None else db_to_gain(config.echo_guard_db)
        )
        self._echo = EchoGuard()  # tells echo from double talk (bridge/audio/echo_guard.py)
        self._downsampler = Downsampler24kTo8k()
        self._downsampler16 = Downsampler16kTo8k()  # engines that speak 16 kHz (Bland pcm16)
        self._resample_lock = threading.Lock()
        self._ws: MediaSocket | None = None
        self._stream_sid: str | None = None
        self._writer: threading.Thread | None = None
        self._closing = False
        self._close_code: int | None = None
        self._flush_due = False  # the reader queued a reply, or a backlog is to be retried
        # The peer stopped taking our frames (WRITE_STALL_S): the leg ended for that.
        self.write_stalled = False
        # When the writer, asleep on ``_cond``, will wake by itself (-inf while it is awake).
        self._wake_at = -math.inf
        self.marks_heard = 0
        # Told when a translated chunk began to be heard (monotonic time), from mark echoes.
        self.on_heard: Callable[[float], None] | None = None
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
            ws.hand_over(self._wake_writer)
            self._writer = threading.Thread(
                target=self._run_writer, name=f"leg-writer:{self._tag}", daemon=True
            )
            self._writer.start()
        return True

    def play(self, audio: Pcm16, received_at: float) -> None:
        """Queue translated audio (24 or 16 kHz from an engine, 8 kHz as is) for this party.

        Two engine sessions can deliver at once (the old one flushing while its replacement
        starts), so the stateful resampler is used under its own lock.
        """
        with self._resample_lock:
            if audio.rate_hz == ENGINE_RATE_HZ:
                samples = self._downsampler.process(audio.samples)
            elif audio.rate_hz == TWILIO_RATE_HZ:
                samples = audio.samples
            elif audio.rate_hz == RATE_16K_HZ:
                samples = self._downsampler16.process(audio.samples)
            else:
                raise ValueError(f"cannot play {audio.rate_hz} Hz audio")
        with self._cond:
            if self._closing:
                return
            if self._live_source and self._ws is None:
                # Nobody is on this line yet: a phone line does not store speech for later.
                self._metrics.audio_dropped_seconds.labels("before_answer").inc(
                    len(samples) / TWILIO_RATE_HZ
                )
                return
            before = self._playout.dropped_samples, self._playout.cleared_samples
            self._playout.push(samples, received_at, self._clock())
            dropped = self._playout.dropped_samples - before[0]
            cleared = self._playout.cleared_samples - before[1]
            self._cond.notify()
        if dropped:
            self._metrics.audio_dropped_seconds.labels("playout_backlog").inc(
                dropped / TWILIO_RATE_HZ
            )
        if cleared:
            self._metrics.audio_dropped_seconds.labels("playout_cleared").inc(
                cleared / TWILIO_RATE_HZ
            )

    def hear_other_party(self, audio: Pcm16) -> None:
        """The other party's own voice, to be mixed quietly under the translation."""
        now = self._clock()
        with self._cond:
            if self._closing:
                return
            self._playout.push_passthrough(audio.samples)
            # Wake the writer only if this frame is due before it wakes anyway. While
            # translation plays the writer is paced by it and mixes whatever passthrough
            # waits: a wakeup for every 20 ms of the other party's voice was a thread switch
            # per frame for nothing.
            if self._wake_at <= now:
                self._cond.notify()
            else:
                wait = self._playout.next_wake(now)
                if wait is not None and now + wait < self._wake_at:
                    self._cond.notify()

    def guard_input(self, audio: Pcm16) -> Pcm16:
        """This party's microphone audio, attenuated while our translation may be echoing in it.

        Only audio that looks like an echo of what we played is attenuated: the party talking
        over the translation still goes through.
        """
        if self._guard_gain is None:
            return audio
        now = self._clock()
        with self._cond:
            audible = self._playout.translation_audible(now)
            heard, heard_end = self._playout.heard(now)
        if not audible:
            self._echo.reset()
            return audio
        if self._echo.is_echo(audio.samples, heard, heard_end):
            self._metrics.echo_guarded_seconds.labels(self.role).inc(
                len(audio.samples) / audio.rate_hz
            )
            return Pcm16(scale(audio.samples, self._guard_gain), audio.rate_hz)
        return audio

    def on_mark(self, name: str) -> None:
        """Twilio played everything we queued before mark ``name``."""
        self.marks_heard += 1
        with self._cond:
            heard_from = self._playout.on_mark(name, self._clock())
        if heard_from is not None and self.on_heard is not None:
            self.on_heard(heard_from)

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

    def _wake_writer(self) -> None:
        """The reader queued a reply (a pong) on the socket: the writer writes it."""
        with self._cond:
            self._flush_due = True
            self._cond.notify()

    def _observe(self, edge: str, seconds: float) -> None:
        self._metrics.audio_to_twilio.labels(edge).observe(seconds)

    def _run_writer(self) -> None:
        ws, stream_sid = self._ws, self._stream_sid
        assert ws is not None and stream_sid is not None
        frames = self._metrics.frames_sent.labels(self.role)
        media_message = media_messages(stream_sid)
        try:
            while (out := self._next_out(ws)) is not None:
                if not out:
                    ws.flush()
                for item in out:
                    if isinstance(item, Frame):
                        ulaw = pcm16_to_ulaw(Pcm16(item.pcm, TWILIO_RATE_HZ))
                        ws.send(media_message(ulaw))
                        frames.inc()
                    elif isinstance(item, ClearOut):
                        ws.send(clear_message(stream_sid))
                    else:
                        ws.send(mark_message(stream_sid, item.name))
        except WriteStalled as exc:
            self.write_stalled = True
            self._metrics.media_write_stalls.labels(self.role).inc()
            self._log.warning("media socket stopped draining (%s): ending the leg", exc)
        except Exception as exc:  # noqa: BLE001 - thread boundary: a dead socket ends the leg
            self._log.info("media socket write ended: %s", type(exc).__name__)
        finally:
            try:
                ws.close(reason=self._close_code)  # never blocks
            except Exception:  # noqa: BLE001 - thread boundary; StreamSocket's close never raises
                self._log.debug("closing media socket raised", exc_info=True)

    def _next_out(self, ws: MediaSocket) -> list[Outbound] | None:
        """Wait for what is due: frames, marks, clears; [] when only the socket's own backlog
        or the reader's replies are to be written; None once closing."""
        with self._cond:
            while not self._closing:
                now = self._clock()
                out, wait = self._playout.due(now)
                if out or self._flush_due:
                    self._flush_due = False
                    return out
                if ws.backlogged:
                    # Retried after this wait even if nothing else is due by then.
                    self._flush_due = True
                    wait = BACKLOG_RETRY_S if wait is None else min(wait, BACKLOG_RETRY_S)
                self._wake_at = math.inf if wait is None else now + wait
                self._cond.wait(wait)
                self._wake_at = -math.inf
            return None
