"""A leg's outbound path: engine audio in, paced 20 ms μ-law frames and marks out."""

from __future__ import annotations

import base64
import json
import threading
import time

import numpy as np

from bridge.audio import Pcm16, ulaw_to_pcm16
from bridge.leg import CallLeg
from bridge.metrics import Metrics


class RecordingSocket:
    """Stands in for the Media Stream socket: records what the leg's writer sends."""

    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []
        self.closed = threading.Event()
        self.writers: set[str] = set()

    def send(self, data: str) -> None:
        self.writers.add(threading.current_thread().name)
        self.sent.append(json.loads(data))

    def close(self, reason: int | None = None, message: str | None = None) -> None:
        self.closed.set()

    def media(self) -> bytes:
        return b"".join(
            base64.b64decode(m["media"]["payload"])  # type: ignore[index]
            for m in self.sent
            if m["event"] == "media"
        )


def utterance(n_samples: int) -> Pcm16:
    t = np.arange(n_samples)
    return Pcm16((12000 * np.sin(2 * np.pi * 500 * t / 24000)).astype(np.int16), 24000)


def wait_until(predicate: object, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_last_sample_of_an_utterance_reaches_the_leg_without_more_audio() -> None:
    ws = RecordingSocket()
    leg = CallLeg("CAtest", "agent", Metrics())
    assert leg.attach(ws, "MZtest")
    audio = utterance(4801 * 3 + 7)  # not a whole number of 20 ms frames at 8 kHz
    leg.play(audio, time.monotonic())
    expected = len(audio.samples) // 3
    # No more audio is ever sent: the tail must still go out, padded to a whole frame.
    assert wait_until(lambda: len(ws.media()) >= expected)
    heard = ulaw_to_pcm16(ws.media()).samples
    assert len(heard) % 160 == 0
    voiced = np.flatnonzero(np.abs(heard) > 2000)
    assert voiced[-1] >= expected - 40  # the tone lasts to the end (within the filter delay)
    assert ws.sent[-1]["event"] == "mark"
    leg.close()
    assert ws.closed.is_set()
    assert ws.writers == {"leg-writer:CAtest-agent"}  # one writer, and it is the leg's


def test_audio_before_the_stream_attaches_is_kept_and_played() -> None:
    ws = RecordingSocket()
    leg = CallLeg("CAtest", "caller", Metrics())
    leg.play(utterance(4800), time.monotonic())
    assert leg.attach(ws, "MZtest")
    assert wait_until(lambda: len(ws.media()) == 1600)
    leg.close()
    leg.close()  # idempotent
    assert not leg.attach(RecordingSocket(), "MZother")


def test_relay_audio_at_8k_passes_without_resampling() -> None:
    ws = RecordingSocket()
    leg = CallLeg("CAtest", "caller", Metrics())
    leg.attach(ws, "MZtest")
    ulaw = bytes(range(256)) * 5  # 1280 bytes: 8 frames
    leg.play(ulaw_to_pcm16(ulaw), time.monotonic())
    assert wait_until(lambda: len(ws.media()) == len(ulaw))
    assert ws.media().replace(b"\x7f", b"\xff") == ulaw.replace(b"\x7f", b"\xff")
    leg.close()
