"""What the bridge adds to each translation engine's latency: ``python bench/engines.py``.

For every engine with a stand-in in ``tests/engine_standins.HARNESSES`` (an engine appears here
as soon as its harness is registered there; its figures need the harness to implement
``tests.engine_harness.TimedHarness``), plus the variants below, one session is driven the way
the shared suite drives it: turns of speech (a 300 Hz tone) and pauses, at real-time pace. For
every piece of translated audio the stand-in sends, the bench takes the time from the stand-in's
send to the engine's ``on_audio`` call: the loopback socket, the SDK's parsing, base64 and
decoding, and any resampling in the engine. That is the bridge's share, not the vendor's model
(a stand-in answers at once). From ``on_audio`` on, every engine shares the same leg (pacing,
24 → 8 kHz resampling: ~2 ms; μ-law): that part is the same for all and not measured here.

A second table gives the CPU cost of each wire audio format's conversions per 20 ms frame both
ways (speaker up, translation down), which is what differs between ``pcm24`` and ``pcmu``.

Prints Markdown tables. Timings on a shared machine vary between runs; run it twice.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np

# Run as a script from anywhere: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.audio.pcm import TWILIO_RATE_HZ, Pcm16
from bridge.audio.resample import Downsampler24kTo8k, Upsampler8kTo24k
from bridge.engines import registry as engines
from bridge.engines.contract import SessionSpec, TextKind, TranslationSession
from bridge.engines.openai.config import AudioFormat
from bridge.engines.openai.interpreter import decode_output, encode_input
from bridge.engines.registry import settings_from_env
from bridge.ops.metrics import Metrics
from tests.engine_harness import EngineHarness, TimedHarness
from tests.engine_sessions import BASE_ENV, speak
from tests.engine_standins import HARNESSES, OpenAIRealtimeHarness

# Label -> (the HARNESSES entry, settings on top of its env).
VARIANTS: dict[str, tuple[str, Mapping[str, str]]] = {
    "openai-realtime (pcm24)": ("openai-realtime", {"REALTIME_AUDIO_FORMAT": "pcm24"}),
}
SPEECH_S = 1.0
PAUSE_S = 0.7  # longer than the realtime engine's VAD silence (500 ms): each turn ends
FRAME = TWILIO_RATE_HZ // 50


class Arrivals:
    """A listener noting when each piece of audio was handed over."""

    def __init__(self) -> None:
        self.at: list[float] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()

    def on_audio(self, audio: Pcm16, received_at: float) -> None:
        now = time.monotonic()
        with self._lock:
            self.at.append(now)

    def on_text(self, kind: TextKind, text: str) -> None:
        """Text is not timed here."""

    def on_failed(self, reason: str, *, opened: bool) -> None:
        self.failures.append(reason)


def run_session(harness: EngineHarness, env: Mapping[str, str], turns: int) -> list[float]:
    """Milliseconds from the stand-in's send to ``on_audio``, for each piece of audio."""
    settings = settings_from_env({**BASE_ENV, **harness.env(), **env}, env_file=None)
    arrivals = Arrivals()
    spec = SessionSpec(f"CA{uuid.uuid4().hex}", "caller_to_agent", "en", "es")
    started = time.monotonic()
    session: TranslationSession = engines.build(settings, Metrics()).session(spec, arrivals)
    session.start()
    for _ in range(turns):
        speak(session, SPEECH_S)
        speak(session, PAUSE_S, voiced=False)
    speak(session, 1.0, voiced=False)  # the last translation arrives
    session.close()
    time.sleep(0.5)
    if arrivals.failures:
        raise RuntimeError(f"{harness.name}: {arrivals.failures[0]}")
    turns_ms = turn_start_ms(harness, started)
    if turns_ms:
        print(
            f"  ({harness.name}: turn end → response.create median "
            f"{statistics.median(turns_ms):.2f} ms over {len(turns_ms)} turns)"
        )
    if not isinstance(harness, TimedHarness):
        return []
    sent = [t for t in harness.output_sent_at() if t >= started]
    if len(sent) != len(arrivals.at):
        print(
            f"  ({harness.name}: {len(sent)} sent, {len(arrivals.at)} delivered: paired in order)"
        )
    return [1000.0 * (got - out) for out, got in zip(sent, arrivals.at, strict=False)]


def turn_start_ms(harness: EngineHarness, since: float) -> list[float]:
    """Realtime voice only: from the stand-in's ``input_audio_buffer.committed`` to the
    bridge's ``response.create`` for it (the round trip a turn-based engine adds)."""
    if not isinstance(harness, OpenAIRealtimeHarness):
        return []
    delays = []
    for session in harness.server.realtime_sessions:
        if session.connected_at < since:
            continue
        committed = [
            t for t, e in session.sent_events if e["type"] == "input_audio_buffer.committed"
        ]
        created = [t for t, e in session.received_events if e["type"] == "response.create"]
        delays += [1000.0 * (c - s) for s, c in zip(committed, created, strict=False)]
    return delays


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def latency_table(turns: int) -> None:
    runs: list[tuple[str, str, Mapping[str, str]]] = [(name, name, {}) for name in HARNESSES]
    runs += [(label, name, env) for label, (name, env) in VARIANTS.items() if name in HARNESSES]
    print("| engine | audio pieces | median ms | p95 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, name, env in sorted(runs):
        with HARNESSES[name]() as harness:
            delays = run_session(harness, env, turns)
        if not delays:
            print(f"| {label} | n/a (harness has no output_sent_at) | | | |")
            continue
        print(
            f"| {label} | {len(delays)} | {statistics.median(delays):.2f} "
            f"| {percentile(delays, 0.95):.2f} | {max(delays):.2f} |"
        )
    print("| relay | every 20 ms frame | 0 (in-process, no vendor) | | |")


def codec_cost(audio_format: AudioFormat, frames: int) -> float:
    """Median µs per 20 ms frame to send one frame up and bring one frame down, converting as
    the bridge does for ``audio_format``."""
    up = Upsampler8kTo24k()
    down = Downsampler24kTo8k()
    speech = (8000 * np.sin(np.arange(FRAME) * 2 * np.pi * 300 / TWILIO_RATE_HZ)).astype(np.int16)
    pcm24 = audio_format == "pcm24"
    # What comes back: the same frame in the format's output (24 kHz PCM or 8 kHz μ-law).
    reply = encode_input(up.process(speech) if pcm24 else speech, audio_format)
    timings = []
    for _ in range(frames):
        start = time.perf_counter()
        encode_input(up.process(speech) if pcm24 else speech, audio_format)
        heard = decode_output(reply, audio_format)
        if pcm24:
            down.process(heard.samples)
        timings.append(time.perf_counter() - start)
    return 1e6 * statistics.median(timings)


def codec_table(frames: int) -> None:
    print("| wire format | base64 bytes up per 20 ms | µs per 20 ms frame, up + down |")
    print("| --- | ---: | ---: |")
    for audio_format, rate in (("pcm24", 3 * TWILIO_RATE_HZ), ("pcmu", TWILIO_RATE_HZ)):
        fmt: AudioFormat = "pcm24" if audio_format == "pcm24" else "pcmu"
        size = len(encode_input(np.zeros(rate // 50, np.int16), fmt))
        print(f"| {audio_format} | {size} | {codec_cost(fmt, frames):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=4, help="turns of speech per engine")
    parser.add_argument("--frames", type=int, default=5000, help="frames timed per format")
    args = parser.parse_args()
    print("Bridge-added latency, stand-in send → on_audio:\n")
    latency_table(args.turns)
    print("\nWire format conversions:\n")
    codec_table(args.frames)


if __name__ == "__main__":
    main()
