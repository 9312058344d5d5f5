"""Speaking translated text: OpenAI's streaming speech endpoint (``POST /v1/audio/speech``).

One :class:`StreamingSpeaker` per translation session, with one thread of its own: chunks are
spoken one at a time, in the order they became final, and their audio is handed to the listener
while it streams (``response_format: "pcm"``: 24 kHz, 16-bit, mono, little-endian, no header),
so the first words play before the rest is synthesised. :meth:`speak` only queues: the reader
that finds a final chunk never waits for speech.

A failed chunk is logged and counted (``bridge_engine_sessions{event="tts_failed"}``) and its
text is still in the transcript; only ``MAX_FAILURES_IN_A_ROW`` failures end the session, since
by then the listener hears nothing at all.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from openai import OpenAI

from bridge.audio import Pcm16
from bridge.engine import SessionListener
from bridge.logs import CallLogger

TTS_RATE_HZ = 24000  # what response_format "pcm" is documented to be
MAX_FAILURES_IN_A_ROW = 3
# Text is at most 4096 characters per request (OpenAI's API reference); a chunk is a sentence.
MAX_INPUT_CHARS = 4096
# A chunk whose audio has not started this long after it became final is stale: the
# conversation has moved on, and a backlog only grows. Dropped and logged.
STALE_AFTER_S = 20.0


@dataclass(frozen=True, slots=True)
class SpeechTiming:
    """One spoken chunk, for latency figures (``time.monotonic()`` seconds)."""

    final_at: float  # the translated chunk became final
    requested_at: float  # the speech request left
    first_audio_at: float  # its first audio reached the listener


class StreamingSpeaker:
    """Speaks chunks of one language for one listener, one at a time, in order."""

    def __init__(
        self,
        client: OpenAI,
        *,
        model: str,
        voice: str,
        listener: SessionListener,
        log: CallLogger,
        name: str,
        on_failure: Callable[[str], None],
        on_fatal: Callable[[str], None],
    ) -> None:
        self._client = client
        self._model = model
        self._voice = voice
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
            self._queue.append((text[:MAX_INPUT_CHARS], final_at))
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
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._finishing and not self._stopped:
                    self._cond.wait()
                if self._stopped or not self._queue:
                    return
                text, final_at = self._queue.popleft()
            if time.monotonic() - final_at > STALE_AFTER_S:
                self._log.warning("dropping a translated chunk %.0f s old", STALE_AFTER_S)
                continue
            try:
                self._speak_one(text, final_at)
            except Exception as exc:  # noqa: BLE001 - thread boundary: one chunk is lost, not the call
                self._failed(exc)
            else:
                self._failures_in_a_row = 0

    def _speak_one(self, text: str, final_at: float) -> None:
        requested_at = time.monotonic()
        first_audio_at: float | None = None
        carry = b""
        with self._client.audio.speech.with_streaming_response.create(
            model=self._model, voice=self._voice, input=text, response_format="pcm"
        ) as response:
            for received in response.iter_bytes():
                if self._stopped:
                    return
                data = carry + received
                # A network read may split a sample: keep the odd byte for the next read.
                usable = len(data) - len(data) % 2
                carry = data[usable:]
                if not usable:
                    continue
                received_at = time.monotonic()
                self._listener.on_audio(Pcm16.from_bytes(data[:usable], TTS_RATE_HZ), received_at)
                if first_audio_at is None:
                    first_audio_at = received_at
        if first_audio_at is not None:
            self.timings.append(SpeechTiming(final_at, requested_at, first_audio_at))

    def _failed(self, exc: Exception) -> None:
        self._failures_in_a_row += 1
        reason = f"text-to-speech failed: {describe(exc)}"
        self._log.warning("%s (%d in a row)", reason, self._failures_in_a_row)
        self._on_failure(reason)
        if self._failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            self._on_fatal(f"{reason} ({self._failures_in_a_row} chunks in a row)")


def describe(exc: BaseException) -> str:
    """A one-line cause without secrets."""
    status = getattr(exc, "status_code", None)
    if status is not None:
        return f"HTTP {status} from the speech endpoint"
    return f"{type(exc).__name__}: {exc}"
