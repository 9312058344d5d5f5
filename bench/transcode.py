"""Transcoding benchmark: ``.venv/bin/python bench/transcode.py`` (``--quick``: fewer timing runs).

Two parts, measured side by side in one run, printed as Markdown tables:

1. The bridge's whole per-direction path per 20 ms frame, against the same path built on
   ``audioop.ratecv``: Twilio → engine is μ-law 8 kHz → PCM16 → 24 kHz (``ulaw_to_pcm16`` then
   ``Upsampler8kTo24k``), engine → Twilio is 24 kHz → 8 kHz → μ-law (``Downsampler24kTo8k``
   then ``pcm16_to_ulaw``), with a ratio column, the resampler's rejection and delay, and
   whether output comes out with every 20 ms chunk. Target: ≤ 15 µs per frame per direction,
   ≥ 60 dB rejection, ≤ 5 ms delay, nothing held back. (Rejection and delay are properties of
   the resampling stage: the μ-law codec is the same exact G.711 table on both paths, and its
   own quantisation noise would mask a filter's stopband in an FFT.)
2. The resamplers alone: ``audioop.ratecv`` (state carried between frames, as a streaming
   caller would), ``soxr.ResampleStream`` (HQ and VHQ) and ``bridge.audio.resample``, each fed 20 ms
   frames of int16 as the bridge feeds them:

* rejection: worst image (8→24) or alias (24→8) level below the input tone, over several tones,
  from a Hann-windowed FFT of one second of steady output;
* delay: lag of the cross-correlation peak between output and the same band-limited signal
  sampled at the output rate (soxr trims its own filter delay, so this reads ~0 for it);
* held back: output owed for the input so far but not yet returned, after each 20 ms frame;
* cost: median µs per 20 ms frame over many timed runs (each resampler with its native input:
  bytes for audioop, int16 arrays for the others).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import soxr
from numpy.typing import NDArray

with warnings.catch_warnings():
    # Deprecated in 3.11/3.12 (audioop-lts on 3.13+); it is the baseline being compared.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

# Run as a script from anywhere: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.machine import footer, header
from bridge.audio.pcm import Pcm16, pcm16_to_ulaw, ulaw_to_pcm16
from bridge.audio.resample import Downsampler24kTo8k, Upsampler8kTo24k

Samples = NDArray[np.int16]
Floats = NDArray[np.float64]

LOW_HZ, HIGH_HZ = 8000, 24000
FRAME_MS = 20
AMPLITUDE = 30000.0  # near full scale, so int16 rounding limits the reading as little as it can
UP_TONES_HZ = (300, 997, 2003, 3400)  # images at 8k ± f
DOWN_TONES_HZ = (4600, 6000, 7001, 9000, 11500)  # fold to 3.4, 2, 0.999, 1, 3.5 kHz
TIMING_RUNS, FRAMES_PER_RUN = 51, 1000
QUICK_TIMING_RUNS = 7
TARGET_US, TARGET_REJECTION_DB, TARGET_DELAY_MS = 15.0, 60.0, 5.0


class Stream(Protocol):
    def process(self, samples: Samples) -> Samples: ...
    def flush(self) -> Samples: ...


class AudioopStream:
    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.rates = (in_rate, out_rate)
        self.state: tuple[int, tuple[tuple[int, int], ...]] | None = None

    def process_bytes(self, data: bytes) -> bytes:
        out, self.state = audioop.ratecv(data, 2, 1, *self.rates, self.state)
        return out

    def process(self, samples: Samples) -> Samples:
        return np.frombuffer(self.process_bytes(samples.tobytes()), dtype=np.int16)

    def flush(self) -> Samples:
        return np.zeros(0, dtype=np.int16)


class SoxrStream:
    def __init__(self, in_rate: int, out_rate: int, quality: str) -> None:
        self.stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

    def process(self, samples: Samples) -> Samples:
        out: Samples = self.stream.resample_chunk(samples)
        return out

    def flush(self) -> Samples:
        out: Samples = self.stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        return out


class OurStream:
    def __init__(self, resampler: Upsampler8kTo24k | Downsampler24kTo8k) -> None:
        self.resampler = resampler

    def process(self, samples: Samples) -> Samples:
        return self.resampler.process(samples)

    def flush(self) -> Samples:
        return np.zeros(0, dtype=np.int16)


@dataclass(frozen=True)
class Candidate:
    name: str
    make: Callable[[int, int], Stream]


CANDIDATES = (
    Candidate("audioop.ratecv", AudioopStream),
    Candidate("soxr HQ", lambda i, o: SoxrStream(i, o, "HQ")),
    Candidate("soxr VHQ", lambda i, o: SoxrStream(i, o, "VHQ")),
    Candidate(
        "bridge.audio.resample",
        lambda i, o: OurStream(Upsampler8kTo24k() if i < o else Downsampler24kTo8k()),
    ),
)


def frames(samples: Samples, rate: int) -> list[Samples]:
    size = rate * FRAME_MS // 1000
    return [samples[i : i + size] for i in range(0, len(samples), size)]


def run(stream: Stream, samples: Samples, rate: int) -> Samples:
    """The whole signal through ``stream`` in 20 ms frames, then flushed."""
    out = [stream.process(frame) for frame in frames(samples, rate)]
    return np.concatenate([*out, stream.flush()])


def tone(freq_hz: float, rate: int, seconds: float) -> Samples:
    n = np.arange(round(rate * seconds))
    return np.rint(AMPLITUDE * np.sin(2 * np.pi * freq_hz * n / rate)).astype(np.int16)


def spectrum_db(out: Samples, rate: int) -> Floats:
    """Level per 1 Hz bin of one steady second (after 0.2 s), in dB relative to AMPLITUDE."""
    start = rate // 5
    second = out[start : start + rate].astype(np.float64)
    window = np.hanning(len(second))
    amplitude = 2 * np.abs(np.fft.rfft(second * window)) / window.sum()
    level: Floats = 20 * np.log10(np.maximum(amplitude, 1e-9) / AMPLITUDE)
    return level


def rejection_db(candidate: Candidate, up: bool) -> float:
    """Worst image (up) or alias (down) over the test tones, as dB below the input tone."""
    worst = -np.inf
    for freq in UP_TONES_HZ if up else DOWN_TONES_HZ:
        in_rate, out_rate = (LOW_HZ, HIGH_HZ) if up else (HIGH_HZ, LOW_HZ)
        out = run(candidate.make(in_rate, out_rate), tone(freq, in_rate, 1.5), in_rate)
        level = spectrum_db(out, out_rate)
        if up:  # ±2 bins: Hann's main lobe around each image
            worst = max(worst, *(level[f - 2 : f + 3].max() for f in (8000 - freq, 8000 + freq)))
        else:  # the tone is out of band: anything left in the output is alias
            worst = max(worst, level.max())
    return float(-worst)


def band_limited(rate: int, seconds: float) -> Floats:
    """One random sum of sines within 100-3300 Hz, sampled exactly at ``rate``."""
    rng = np.random.default_rng(7)
    freqs, phases = rng.uniform(100, 3300, 40), rng.uniform(0, 2 * np.pi, 40)
    t = np.arange(round(rate * seconds)) / rate
    signal = np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None]).sum(axis=0)
    scaled: Floats = 8000 * signal / np.abs(signal).max()
    return scaled


def delay_ms(candidate: Candidate, up: bool) -> float:
    """Cross-correlation peak (parabolic interpolation between lags), in ms."""
    in_rate, out_rate = (LOW_HZ, HIGH_HZ) if up else (HIGH_HZ, LOW_HZ)
    source = np.rint(band_limited(in_rate, 1.0)).astype(np.int16)
    out = run(candidate.make(in_rate, out_rate), source, in_rate).astype(np.float64)
    reference = band_limited(out_rate, 1.0)
    n = min(len(out), len(reference))
    size = 2 * n
    corr = np.fft.irfft(np.fft.rfft(out[:n], size) * np.conj(np.fft.rfft(reference[:n], size)))
    max_lag = out_rate // 100  # ±10 ms
    lags = np.r_[np.arange(-max_lag, 0), np.arange(max_lag + 1)]
    values = np.r_[corr[size - max_lag :], corr[: max_lag + 1]]
    peak = int(np.argmax(values))
    left, mid, right = values[peak - 1], values[peak], values[peak + 1]
    fraction = 0.5 * (left - right) / (left - 2 * mid + right)
    return float(1000 * (lags[peak] + fraction) / out_rate)


def held_back_ms(candidate: Candidate, up: bool) -> tuple[float, float]:
    """Mean and max output owed but not returned after each 20 ms frame (first 2 s)."""
    in_rate, out_rate = (LOW_HZ, HIGH_HZ) if up else (HIGH_HZ, LOW_HZ)
    stream = candidate.make(in_rate, out_rate)
    total_in = total_out = 0
    held = []
    for frame in frames(np.rint(band_limited(in_rate, 2.0)).astype(np.int16), in_rate):
        total_in += len(frame)
        total_out += len(stream.process(frame))
        held.append(1000 * (total_in * out_rate / in_rate - total_out) / out_rate)
    return statistics.fmean(held), max(held)


def per_frame_us(call: Callable[[], object], frames_per_call: int) -> float:
    """Median over runs of the mean µs per 20 ms frame, after a warm-up."""
    call()
    runs = []
    for _ in range(TIMING_RUNS):
        start, count = time.perf_counter(), 0
        while count < FRAMES_PER_RUN:
            call()
            count += frames_per_call
        runs.append(1e6 * (time.perf_counter() - start) / count)
    return statistics.median(runs)


def cost_us(candidate: Candidate, up: bool) -> float:
    """µs per 20 ms frame of the resampler alone."""
    in_rate, out_rate = (LOW_HZ, HIGH_HZ) if up else (HIGH_HZ, LOW_HZ)
    stream = candidate.make(in_rate, out_rate)
    chunks = frames(np.rint(band_limited(in_rate, 1.0)).astype(np.int16), in_rate)
    call: Callable[[], object]
    if isinstance(stream, AudioopStream):
        blobs, process_bytes = [c.tobytes() for c in chunks], stream.process_bytes
        call = lambda: [process_bytes(b) for b in blobs]  # noqa: E731
    else:
        process = stream.process
        call = lambda: [process(c) for c in chunks]  # noqa: E731
    return per_frame_us(call, len(chunks))


# -- the whole per-direction path -----------------------------------------------------------


def bridge_inbound() -> Callable[[bytes], Samples]:
    """Twilio → engine as the bridge does it: μ-law bytes → Pcm16 → 24 kHz samples."""
    upsampler = Upsampler8kTo24k()
    return lambda ulaw: upsampler.process(ulaw_to_pcm16(ulaw).samples)


def audioop_inbound() -> Callable[[bytes], bytes]:
    stream = AudioopStream(LOW_HZ, HIGH_HZ)
    return lambda ulaw: stream.process_bytes(audioop.ulaw2lin(ulaw, 2))


def bridge_outbound() -> Callable[[Samples], bytes]:
    """Engine → Twilio as the bridge does it: 24 kHz samples → 8 kHz → μ-law bytes."""
    downsampler = Downsampler24kTo8k()
    return lambda pcm: pcm16_to_ulaw(Pcm16(downsampler.process(pcm), LOW_HZ))


def audioop_outbound() -> Callable[[bytes], bytes]:
    stream = AudioopStream(HIGH_HZ, LOW_HZ)
    return lambda pcm: audioop.lin2ulaw(stream.process_bytes(pcm), 2)


def path_cost_us(up: bool, ours: bool) -> float:
    """µs per 20 ms frame of one direction's whole path, each fed its native input."""
    rate = LOW_HZ if up else HIGH_HZ
    chunks = frames(np.rint(band_limited(rate, 1.0)).astype(np.int16), rate)
    if up:
        ulaw = [audioop.lin2ulaw(c.tobytes(), 2) for c in chunks]
        step_in = bridge_inbound() if ours else audioop_inbound()
        return per_frame_us(lambda: [step_in(u) for u in ulaw], len(ulaw))
    if ours:
        step_out = bridge_outbound()
        return per_frame_us(lambda: [step_out(c) for c in chunks], len(chunks))
    blobs = [c.tobytes() for c in chunks]
    step_bytes = audioop_outbound()
    return per_frame_us(lambda: [step_bytes(b) for b in blobs], len(blobs))


def released_every_chunk(up: bool) -> bool:
    """Does every 20 ms frame through the bridge's path come out at once, whole?"""
    rate = LOW_HZ if up else HIGH_HZ
    chunks = frames(np.rint(band_limited(rate, 0.5)).astype(np.int16), rate)
    if up:
        step_in = bridge_inbound()
        return all(len(step_in(audioop.lin2ulaw(c.tobytes(), 2))) == 3 * len(c) for c in chunks)
    step_out = bridge_outbound()
    return all(len(step_out(c)) == len(c) // 3 for c in chunks)


def path_table() -> str:
    rows = [
        "### The whole path per 20 ms frame, per direction (bridge vs audioop.ratecv)",
        "",
        "| direction | path | µs per 20 ms frame | × audioop | rejection dB | delay ms "
        "| held back ms (max) | output with every chunk | target met |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    ours_candidate, theirs_candidate = CANDIDATES[3], CANDIDATES[0]
    for up in (True, False):
        name = (
            "Twilio → engine (μ-law 8k → PCM16 24k)" if up else "engine → Twilio (24k → μ-law 8k)"
        )
        theirs = path_cost_us(up, ours=False)
        ours = path_cost_us(up, ours=True)
        for label, candidate, cost in (
            (
                "audioop ulaw2lin + ratecv" if up else "audioop ratecv + lin2ulaw",
                theirs_candidate,
                theirs,
            ),
            ("bridge", ours_candidate, ours),
        ):
            reject, delay = rejection_db(candidate, up), delay_ms(candidate, up)
            _, held_max = held_back_ms(candidate, up)
            every = released_every_chunk(up) if candidate is ours_candidate else held_max < 0.2
            met = (
                cost <= TARGET_US
                and reject >= TARGET_REJECTION_DB
                and delay <= TARGET_DELAY_MS
                and every
            )
            rows.append(
                f"| {name} | {label} | {cost:.1f} | {cost / theirs:.2f} | {fmt(reject, 1)} "
                f"| {fmt(delay, 2)} | {fmt(held_max, 1)} | {'yes' if every else 'no'} "
                f"| {'yes' if met else 'no'} |"
            )
    return "\n".join(rows)


def fmt(value: float, digits: int) -> str:
    """Fixed-point, without the "-0.0" that rounding a tiny negative number gives."""
    text = f"{value:.{digits}f}"
    return text.lstrip("-") if float(text) == 0 else text


def table(up: bool) -> str:
    title = "8 kHz → 24 kHz (image rejection)" if up else "24 kHz → 8 kHz (alias rejection)"
    rows = [
        f"### {title}",
        "",
        "| resampler | rejection dB | delay ms | held back ms (mean / max) | latency ms "
        "| µs per 20 ms frame | cost × audioop |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    baseline = None
    for candidate in CANDIDATES:
        reject, delay = rejection_db(candidate, up), delay_ms(candidate, up)
        (held_mean, held_max), cost = held_back_ms(candidate, up), cost_us(candidate, up)
        baseline = baseline or cost
        rows.append(
            f"| {candidate.name} | {fmt(reject, 1)} | {fmt(delay, 2)} "
            f"| {fmt(held_mean, 1)} / {fmt(held_max, 1)} | {fmt(delay + held_mean, 1)} "
            f"| {cost:.1f} | {cost / baseline:.1f} |"
        )
    return "\n".join(rows)


def main() -> None:
    global TIMING_RUNS  # noqa: PLW0603 - one knob for the whole run
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timing runs (noisier)")
    args = parser.parse_args()
    if args.quick:
        TIMING_RUNS = QUICK_TIMING_RUNS
    print(header("Transcoding"))
    print(f"\nnumpy {np.__version__}, soxr {soxr.__version__}; {TIMING_RUNS} timing runs\n")
    print(
        f"target: ≤ {TARGET_US:.0f} µs per frame per direction, ≥ {TARGET_REJECTION_DB:.0f} dB "
        f"rejection, ≤ {TARGET_DELAY_MS:.0f} ms delay, output with every chunk\n"
    )
    print(path_table(), end="\n\n")
    print("latency = delay + mean held back (soxr trims its filter delay but holds output back);")
    print("cost: audioop is timed on bytes, the others on int16 arrays\n")
    print(table(up=True), end="\n\n")
    print(table(up=False), end="\n\n")
    print(footer())


if __name__ == "__main__":
    main()
