"""A leg's outbound path: engine audio in, paced 20 ms μ-law frames and marks out."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from bridge.audio.jitter import HOLD_MAX_S
from bridge.audio.pcm import Pcm16, ulaw_to_pcm16
from bridge.calls.leg import CallLeg, LegConfig
from bridge.ops.metrics import Metrics


class RecordingSocket:
    """Stands in for the Media Stream socket: records what the leg's writer sends (it takes
    everything at once: the socket's own backlog is tests/test_inline_ws.py's)."""

    backlogged = False

    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []
        self.closed = threading.Event()
        self.writers: set[str] = set()

    def hand_over(self, wake: Callable[[], None]) -> None:
        pass

    def flush(self) -> bool:
        return True

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


def test_16k_audio_is_resampled_and_other_rates_are_refused() -> None:
    ws = RecordingSocket()
    leg = CallLeg("CAtest", "caller", Metrics())
    leg.attach(ws, "MZtest")
    t = np.arange(3200)  # 200 ms at 16 kHz (a vendor speaking 16 kHz PCM16, e.g. Bland)
    leg.play(Pcm16((12000 * np.sin(2 * np.pi * 500 * t / 16000)).astype(np.int16), 16000), 0.0)
    assert wait_until(lambda: len(ws.media()) >= 1600)
    heard = ulaw_to_pcm16(ws.media()).samples
    spectrum = np.abs(np.fft.rfft(heard[400:1600].astype(np.float64)))
    assert np.argmax(spectrum) * 8000 / 1200 == 500  # the tone, at 8 kHz
    with pytest.raises(ValueError, match="48000 Hz"):
        leg.play(Pcm16(np.zeros(480, np.int16), 48000), 0.0)
    leg.close()


def test_echo_guard_attenuates_echo_of_what_was_played_but_not_other_speech() -> None:
    now = [0.0]
    ws = RecordingSocket()
    config = LegConfig(echo_guard_db=-30.0)
    leg = CallLeg("CAtest", "agent", Metrics(), config, clock=lambda: now[0])
    leg.attach(ws, "MZtest")
    leg.play(utterance(4800 * 3), received_at=0.0)  # 600 ms of translation
    now[0] = HOLD_MAX_S  # a call's first utterance is held back this long (engine jitter)
    assert wait_until(lambda: any(m["event"] == "mark" for m in ws.sent))
    played = ulaw_to_pcm16(ws.media()).samples
    # The phone sends back what it played, 6 dB down and 37 ms late.
    echo = (played[:4000].astype(np.int32) // 2).astype(np.int16)
    echo = np.concatenate((np.zeros(300, dtype=np.int16), echo))

    def speak(frame: np.ndarray) -> np.ndarray:
        now[0] += 0.02  # the microphone's 20 ms frames arrive as Twilio plays ours
        return leg.guard_input(Pcm16(frame.astype(np.int16), 8000)).samples

    for i in range(0, 3200, 160):
        guarded = speak(echo[i : i + 160])
        assert np.abs(guarded).max() <= np.abs(echo[i : i + 160]).max() * 0.032 + 1
    # The agent talking over the translation (another voice) is let through within 200 ms.
    t = np.arange(3200)
    voice = 6000 * np.sin(2 * np.pi * 1230 * t / 8000) * np.sin(2 * np.pi * 3 * t / 8000)
    passed = [speak(voice[i : i + 160]) for i in range(0, 3200, 160)]
    assert all(
        np.array_equal(p, voice[i * 160 : (i + 1) * 160].astype(np.int16))
        for i, p in enumerate(passed)
        if i >= 10
    )
    now[0] = HOLD_MAX_S + 0.6 + 0.5 + 0.1  # played out, echo tail over: nothing is guarded
    quiet_echo = Pcm16(echo[:160], 8000)
    assert leg.guard_input(quiet_echo) is quiet_echo
    leg.close()


def test_passthrough_reaches_the_listener_at_its_level() -> None:
    ws = RecordingSocket()
    leg = CallLeg("CAtest", "caller", Metrics(), LegConfig(passthrough_db=-14.0))
    leg.attach(ws, "MZtest")
    voice = utterance(480 * 3 * 10).samples[::3][:1600]
    for i in range(10):
        leg.hear_other_party(Pcm16(voice[i * 160 : (i + 1) * 160], 8000))
        time.sleep(0.02)
    assert wait_until(lambda: len(ws.media()) >= 1280)
    heard = ulaw_to_pcm16(ws.media()).samples[160:1280]
    level = 20 * np.log10(
        np.sqrt(np.mean(heard.astype(float) ** 2))
        / np.sqrt(np.mean(voice[160:1280].astype(float) ** 2))
    )
    assert abs(level + 14.0) < 0.5  # μ-law quantisation costs a little
    leg.close()


def test_relay_audio_is_not_held_back() -> None:
    """Relay audio is the other party's voice in whole frames, paced live: no jitter hold.
    The clock never moves here, so a held frame would never leave."""
    ws = RecordingSocket()
    config = LegConfig(live_source=True)
    leg = CallLeg("CAtest", "caller", Metrics(), config, clock=lambda: 5.0)
    leg.attach(ws, "MZtest")
    leg.play(ulaw_to_pcm16(bytes(range(160))), received_at=5.0)
    assert wait_until(lambda: len(ws.media()) == 160)
    leg.close()
