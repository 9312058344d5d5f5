"""``ENGINE=bland``: the latency the bridge adds, and what each audio protocol costs.

1. Added latency: a session against the Bland stand-in (tests/fakes/bland.py, loopback) speaks
   utterances; for every translated media frame, the time from the stand-in handing it to its
   socket to the session's ``on_audio`` call delivering it as Pcm16 (socket, JSON, base64,
   μ-law decode and our reader thread included).
2. Protocol cost per 20 ms frame, both ways, ``twilio_ulaw`` (what the engine uses) against
   ``pcm16`` (8 kHz in, Bland's 16 kHz out): bytes on the wire and CPU. pcm16's answer must be
   brought to 8 kHz for Twilio; the bridge has no 16 → 8 kHz resampler, so soxr stands in
   (what it holds back is delay a listener hears).

    .venv/bin/python bench/bland.py [--utterances 20]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.audio.pcm import Pcm16, pcm16_to_ulaw, ulaw_to_pcm16
from bridge.engines.bland import wire
from bridge.engines.bland.engine import BlandEngine
from bridge.engines.contract import SessionSpec, TextKind
from bridge.engines.registry import settings_from_env
from bridge.ops.metrics import Metrics
from tests.engine_sessions import BASE_ENV, speak
from tests.engine_standins import BLAND_KEY
from tests.fakes.audio import sine
from tests.fakes.bland import FakeBland

FRAME = 160  # 20 ms at 8 kHz


class Clock:
    def __init__(self) -> None:
        self.delivered: list[float] = []

    def on_audio(self, audio: Pcm16, received_at: float) -> None:
        self.delivered.append(time.monotonic())

    def on_text(self, kind: TextKind, text: str) -> None:
        pass

    def on_failed(self, reason: str, *, opened: bool) -> None:
        raise SystemExit(f"session failed: {reason}")


def added_latency(utterances: int) -> tuple[list[float], list[float]]:
    """Per frame, and per utterance's first frame (what the listener waits on), in ms."""
    with FakeBland(api_key=BLAND_KEY) as server:
        env = {"ENGINE": "bland", "BLAND_API_KEY": BLAND_KEY, "BLAND_BASE_URL": server.base_url}
        settings = settings_from_env({**BASE_ENV, **env}, env_file=None)
        clock = Clock()
        session = BlandEngine(settings, Metrics()).session(
            SessionSpec(f"CA{uuid.uuid4().hex}", "caller_to_agent", "en"), clock
        )
        session.start()
        for _ in range(utterances):
            speak(session, 0.6)
            speak(session, 0.5, voiced=False)
        session.close()
        time.sleep(1.0)
        sent = [t for s in server.sessions for t in s.output_sent_at]
    pairs = list(zip(sent, clock.delivered, strict=True))
    every = [1000.0 * (got - put) for put, got in pairs]
    # An utterance's answer is one burst: its first frame follows a gap in the stand-in's sends.
    firsts = [every[i] for i in range(len(pairs)) if i == 0 or sent[i] - sent[i - 1] > 0.1]
    return every, firsts


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p50 = ordered[len(ordered) // 2]
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return f"p50 {p50:.2f} ms, p95 {p95:.2f} ms, max {ordered[-1]:.2f} ms"


def per_frame_us(fn: object, n: int = 5000) -> float:
    assert callable(fn)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return 1e6 * (time.perf_counter() - start) / n


def protocol_costs() -> None:
    pcm8 = Pcm16(sine(300.0, FRAME, 8000, 8000.0), 8000)
    ulaw = pcm16_to_ulaw(pcm8)
    pcm16k = sine(440.0, 2 * FRAME, 16000, 8000.0)
    media_in = wire.media_message("MZ" + "0" * 32, 1, 0, 0, ulaw)
    media_out = json.dumps(
        {"event": "media", "streamSid": "MZ" + "0" * 32, "media": {"payload": "x"}}
    ).replace('"x"', json.dumps(base64.b64encode(ulaw).decode()))
    stream = soxr.ResampleStream(16000, 8000, 1, dtype="int16")
    held: list[int] = []

    def pcm16_out() -> None:
        out = stream.resample_chunk(np.frombuffer(pcm16k.tobytes(), dtype="<i2"))
        held.append(len(pcm16k) // 2 - len(out))

    rows = [
        ("in", "twilio_ulaw", len(media_in), per_frame_us(
            lambda: wire.media_message("MZ" + "0" * 32, 1, 0, 0, pcm16_to_ulaw(pcm8)))),
        ("in", "pcm16 8 kHz", 2 * FRAME, per_frame_us(pcm8.to_bytes)),
        ("out", "twilio_ulaw", len(media_out), per_frame_us(
            lambda: ulaw_to_pcm16(wire.parse_server_message(media_out).ulaw))),  # type: ignore[union-attr]
        ("out", "pcm16 16 kHz + soxr to 8 kHz", 4 * FRAME, per_frame_us(pcm16_out)),
    ]  # fmt: skip
    print("| direction | protocol | bytes per 20 ms frame | µs per frame |")
    print("| --- | --- | ---: | ---: |")
    for direction, name, size, us in rows:
        print(f"| {direction} | {name} | {size} | {us:.1f} |")
    mean_held_ms = 1000.0 * statistics.mean(np.cumsum(held)) / 8000
    print(f"\nsoxr 16 -> 8 kHz holds back {mean_held_ms:.1f} ms on average (fed 20 ms frames)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--utterances", type=int, default=20)
    args = parser.parse_args()
    every, firsts = added_latency(args.utterances)
    print(f"added latency, stand-in send -> on_audio, {len(firsts)} utterances' first frames:")
    print(f"  {percentiles(firsts)}")
    print(
        f"every frame ({len(every)}, later ones queue behind their burst): {percentiles(every)}\n"
    )
    protocol_costs()


if __name__ == "__main__":
    main()
