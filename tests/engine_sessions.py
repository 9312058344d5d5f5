"""What every engine test shares: the settings they start from, a listener that records what a
session hands back, and a speaker feeding a session at real-time pace."""

from __future__ import annotations

import threading
import time

import numpy as np

from bridge.audio.pcm import TWILIO_RATE_HZ, Pcm16
from bridge.engines.contract import TextKind, TranslationSession
from tests.bridge_process import ACCOUNT_SID, AGENT_NUMBER, AUTH_TOKEN
from tests.fakes.audio import sine

FRAME = TWILIO_RATE_HZ // 50  # 20 ms at 8 kHz, what one Twilio media frame carries
SPEECH_HZ = 300.0  # the speaker's "voice": a tone the stand-ins count as speech
BASE_ENV = {
    "PUBLIC_BASE_URL": "https://bridge.example.com",
    "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
    "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    "AGENT_NUMBER": AGENT_NUMBER,
}


class Recorder:
    """A :class:`SessionListener` that keeps everything and lets the test wait for it."""

    def __init__(self) -> None:
        self.audio: list[tuple[Pcm16, float]] = []
        self.texts: list[tuple[TextKind, str]] = []
        self.failures: list[tuple[str, bool]] = []
        self._changed = threading.Condition()

    def on_audio(self, audio: Pcm16, received_at: float) -> None:
        with self._changed:
            self.audio.append((audio, received_at))
            self._changed.notify_all()

    def on_text(self, kind: TextKind, text: str) -> None:
        with self._changed:
            self.texts.append((kind, text))
            self._changed.notify_all()

    def on_failed(self, reason: str, *, opened: bool) -> None:
        with self._changed:
            self.failures.append((reason, opened))
            self._changed.notify_all()

    def wait(self, what: str, ready: object, timeout: float = 15.0) -> None:
        assert callable(ready)
        deadline = time.monotonic() + timeout
        with self._changed:
            while not ready():
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"timed out waiting for {what}"
                self._changed.wait(remaining)

    def heard(self, after: float = 0.0) -> Pcm16 | None:
        """Everything received after ``after`` (monotonic), joined at its own rate."""
        with self._changed:
            parts = [a for a, t in self.audio if t >= after]
        if not parts:
            return None
        return Pcm16(np.concatenate([p.samples for p in parts]), parts[0].rate_hz)

    def text(self, kind: TextKind) -> str:
        with self._changed:
            return "".join(t for k, t in self.texts if k == kind)


def speak(session: TranslationSession, seconds: float, voiced: bool = True) -> None:
    """Feed ``seconds`` of the speaker's audio in 20 ms frames at real-time pace."""
    n = round(seconds * 50)
    start = time.monotonic()
    for i in range(n):
        if voiced:
            frame = sine(SPEECH_HZ, FRAME, TWILIO_RATE_HZ, 8000.0, i * FRAME)
        else:
            frame = np.zeros(FRAME, dtype=np.int16)
        session.send_audio(Pcm16(frame, TWILIO_RATE_HZ))
        time.sleep(max(0.0, start + (i + 1) * 0.02 - time.monotonic()))
