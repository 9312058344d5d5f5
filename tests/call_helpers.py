"""Helpers shared by the tests that drive whole calls through the bridge."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.bridge_process import (
    ACCOUNT_SID,
    AGENT_NUMBER,
    AUTH_TOKEN,
    BridgeProcess,
    free_port,
    run_bridge,
)
from tests.fakes.audio import load_wav, pcm16_to_ulaw, sine, ulaw_silence, ulaw_to_pcm16
from tests.fakes.openai_translate import FakeSession, FakeTranslationServer
from tests.fakes.twilio import FakeCall, FakeTwilio

CALLER_NUMBER = "+34911222333"
BRIDGE_NUMBER = "+15550002222"
LEAD_IN_S = 1.0  # line silence before each party speaks, so both legs are up by then


@dataclass
class Stack:
    bridge: BridgeProcess
    twilio: FakeTwilio
    openai: FakeTranslationServer | None


@contextmanager
def bridge_stack(
    log_dir: Path, env: Mapping[str, str], openai: FakeTranslationServer | None
) -> Iterator[Stack]:
    """A FakeTwilio bound to a fresh bridge (gunicorn, Procfile command) on a free port."""
    port = free_port()
    with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, f"http://127.0.0.1:{port}") as twilio:
        full_env = {"TWILIO_API_BASE_URL": twilio.rest_base_url, **env}
        if openai is not None:
            full_env.setdefault("ENGINE", "openai")
            full_env.setdefault("OPENAI_API_KEY", "sk-test-key-91c2")
            full_env.setdefault("OPENAI_BASE_URL", openai.base_url)
        else:
            full_env.setdefault("ENGINE", "relay")
        with run_bridge(port, full_env, log_dir) as bridge:
            yield Stack(bridge, twilio, openai)


def speech(path: Path, lead_in_s: float = LEAD_IN_S) -> bytes:
    return ulaw_silence(int(8000 * lead_in_s)) + load_wav(path)[2]


def tone_ulaw(seconds: float, freq_hz: float = 300.0, amplitude: float = 8000.0) -> bytes:
    """A steady tone as 8 kHz μ-law: 'speech' that never pauses."""
    return pcm16_to_ulaw(sine(freq_hz, int(8000 * seconds), 8000, amplitude))


def agent_of(twilio: FakeTwilio, caller: FakeCall, timeout: float = 10.0) -> FakeCall:
    """The agent leg the bridge dialled for ``caller`` (its TwiML names the caller's call)."""

    def mine() -> list[FakeCall]:
        return [
            c
            for c in twilio.agent_calls()
            if c.to == AGENT_NUMBER and caller.sid in (c.initial_twiml or "")
        ]

    assert twilio.wait_for(lambda: bool(mine()), timeout), "the bridge never dialled the agent"
    return mine()[0]


def wait_streaming(twilio: FakeTwilio, *calls: FakeCall, timeout: float = 10.0) -> None:
    assert twilio.wait_for(
        lambda: all(
            c.stream is not None and c.stream.stream_sid and c.stream.media_sent > 0 for c in calls
        ),
        timeout,
    ), "a leg's Media Stream never started"


def started_at(call: FakeCall) -> float:
    assert call.stream is not None and call.stream.started_at is not None
    return float(call.stream.started_at)


def end_leftover_calls(stack: Stack, timeout: float = 15.0) -> None:
    """Hang up every caller still on the line and wait (best effort) for an idle bridge."""
    for call in stack.twilio.caller_calls():
        if not call.ended.is_set():
            call.hangup()
    deadline = time.monotonic() + timeout
    while stack.bridge.metric("bridge_active_calls") != 0 and time.monotonic() < deadline:
        time.sleep(0.1)


def wait_call_over(bridge: BridgeProcess, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while bridge.metric("bridge_active_calls") != 0:
        assert time.monotonic() < deadline, "the bridge still counts an active call"
        time.sleep(0.1)


def new_sessions(openai: FakeTranslationServer, before: int, n: int = 2) -> list[FakeSession]:
    """The ``n`` sessions opened after ``before`` existed, once each is configured."""
    sessions = openai.wait_for_sessions(before + n, timeout=10)[before : before + n]
    deadline = time.monotonic() + 5
    while not all(s.output_language for s in sessions):
        assert time.monotonic() < deadline, "a session was never configured"
        time.sleep(0.01)
    return sessions


def carries_tone(frame: bytes, freq_hz: float) -> bool:
    """Does this 20 ms frame carry the translator's tone (not just the quiet passthrough)?"""
    samples = ulaw_to_pcm16(frame).astype(np.float64)
    t = np.arange(len(samples)) / 8000
    level = abs(np.dot(samples, np.exp(-2j * np.pi * freq_hz * t))) / len(samples)
    return bool(level > 1000)  # the tone is 8000 / 2 = 4000 here; speech at -26 dB far less


def played_gaps(call: FakeCall, start: float, end: float, tone_hz: float | None = None) -> float:
    """The longest silence the party *heard* between ``start`` and ``end`` (monotonic times).

    Frames play back to back from when they arrive, as Twilio's buffer does; a gap is time
    in which nothing was left to play. With ``tone_hz``, only frames carrying the translator's
    tone count: the gap in *translation*, which the quiet passthrough would otherwise hide.
    """
    play_end: float | None = None
    longest = 0.0
    frames = call.heard_frames
    if tone_hz is not None:
        frames = [f for f in frames if carries_tone(f.data, tone_hz)]
    for frame in frames:
        if play_end is not None and start <= frame.time <= end:
            longest = max(longest, frame.time - play_end)
        play_end = max(play_end or frame.time, frame.time) + len(frame.data) / 8000
    return longest


def heard_tone_s(call: FakeCall, freq_hz: float) -> float:
    """Seconds of what ``call`` heard that carry a tone of ``freq_hz``."""
    return sum(len(f.data) for f in call.heard_frames if carries_tone(f.data, freq_hz)) / 8000


def heard_seconds(call: FakeCall) -> float:
    return sum(len(f.data) for f in call.heard_frames) / 8000


def received_seconds(sessions: list[FakeSession]) -> float:
    """Audio the engine stand-in received over ``sessions`` (24 kHz PCM16)."""
    return sum(len(s.received_audio) for s in sessions) / 48000


def envelope(samples: np.ndarray, rate_hz: int) -> np.ndarray:
    """RMS per 20 ms block: a rate-independent picture of when someone speaks."""
    block = rate_hz // 50
    n = len(samples) // block
    blocks = samples[: n * block].astype(np.float64).reshape(n, block)
    result: np.ndarray = np.sqrt((blocks**2).mean(axis=1))
    return result
