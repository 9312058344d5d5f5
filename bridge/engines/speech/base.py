"""Speaking translated text, one chunk at a time: what every text-to-speech backend shares.

A :class:`ChunkSpeaker` owns one thread per translation session: chunks are spoken one at a
time, in the order they became final, and their audio goes to the listener while it streams,
so the first words play before the rest is synthesised. :meth:`ChunkSpeaker.speak` only queues:
the reader that finds a final chunk never waits for speech. Backends implement
:meth:`ChunkSpeaker._speak_one` (and may use :meth:`ChunkSpeaker._idle` and
:meth:`ChunkSpeaker._close`).

A failed chunk is logged and counted through ``on_failure`` and its text is still in the
transcript; only ``MAX_FAILURES_IN_A_ROW`` failures end the session (``on_fatal``), since by
then the listener hears nothing at all.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from bridge.audio.pcm import Pcm16
from bridge.engines.contract import SessionListener
from bridge.ops.logs import CallLogger

MAX_FAILURES_IN_A_ROW = 3
# A chunk whose audio has not started this long after it became final is stale: the
# conversation has moved on, and a backlog only grows. Dropped and logged.
STALE_AFTER_S = 20.0
IDLE_EVERY_S = 15.0


@dataclass(frozen=True, slots=True)
class SpeechTiming:
    """One spoken chunk, for latency figures (``time.monotonic()`` seconds)."""

    final_at: float  # the translated chunk became final
    requested_at: float  # the speech request left
    first_audio_at: float  # its first audio reached the listener


class SpeechFailed(Exception):
    """One chunk could not be spoken; ``str()`` is the cause, without secrets."""


class ChunkSpeaker:
    """Speaks chunks for one listener, one at a time, in order, on its own thread."""

    def __init__(
        self,
        *,
        listener: SessionListener,
        log: CallLogger,
        name: str,
        on_failure: Callable[[str], None],
        on_fatal: Callable[[str], None],
    ) -> None:
        self._listener = listener
        self._log = log
        self._on_failure = on_failure
        self._on_fatal = on_fatal
        self._cond = threading.Condition()
        self._queue: deque[tuple[str, float]] = deque()
        self._finishing = False
        self._stopped = False
        self._failures_in_a_row = 0
        self.timings: list[SpeechTiming] = []
        self._thread = threading.Thread(target=self._run, name=f"tts:{name}", daemon=True)
        self._thread.start()

    def speak(self, text: str, final_at: float) -> None:
        """Queue a final translated chunk (never blocks)."""
        with self._cond:
            if self._finishing or self._stopped:
                return
            self._queue.append((text, final_at))
            self._cond.notify()

    def finish(self) -> None:
        """Speak what is queued, then end the thread."""
        with self._cond:
            self._finishing = True
            self._cond.notify()

    def stop(self) -> None:
        """End now: drop what is queued and cut the chunk being spoken."""
        with self._cond:
            self._stopped = True
            self._queue.clear()
            self._cond.notify()

    def join(self, timeout: float) -> None:
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def stopped(self) -> bool:
        return self._stopped

    # -- the speaker's thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (item := self._next()) is not None:
                text, final_at = item
                if time.monotonic() - final_at > STALE_AFTER_S:
                    self._log.warning("dropping a translated chunk %.0f s old", STALE_AFTER_S)
                    continue
                try:
                    self._speak_one(text, final_at)
                except SpeechFailed as exc:
                    self._failed(str(exc))
                except Exception as exc:  # noqa: BLE001 - thread boundary: lose a chunk, not the call
                    self._log.exception("speaking a chunk failed")
                    self._failed(f"{type(exc).__name__}")
                else:
                    self._failures_in_a_row = 0
        finally:
            self._close()

    def _next(self) -> tuple[str, float] | None:
        with self._cond:
            while not self._queue and not self._finishing and not self._stopped:
                if not self._cond.wait(IDLE_EVERY_S):
                    self._cond.release()
                    try:
                        self._idle()
                    finally:
                        self._cond.acquire()
            if self._stopped or not self._queue:
                return None
            return self._queue.popleft()

    def _deliver(self, audio: bytes, rate_hz: int, first_audio_at: float | None) -> float:
        """Hand PCM16 to the listener; returns when the chunk's first audio was delivered."""
        received_at = time.monotonic()
        self._listener.on_audio(Pcm16.from_bytes(audio, rate_hz), received_at)
        return first_audio_at if first_audio_at is not None else received_at

    def _failed(self, cause: str) -> None:
        self._failures_in_a_row += 1
        reason = f"text-to-speech failed: {cause}"
        self._log.warning("%s (%d in a row)", reason, self._failures_in_a_row)
        self._on_failure(reason)
        if self._failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            self._on_fatal(f"{reason} ({self._failures_in_a_row} chunks in a row)")

    # -- for backends -----------------------------------------------------------------------

    def _speak_one(self, text: str, final_at: float) -> None:
        """Speak one chunk, delivering audio as it arrives; raise :class:`SpeechFailed`."""
        raise NotImplementedError

    def _idle(self) -> None:
        """Called every ``IDLE_EVERY_S`` with nothing to say (keepalives)."""

    def _close(self) -> None:
        """The thread is ending: release connections."""
