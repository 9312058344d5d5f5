"""The streaming 3:1 resamplers: rejection, passband, delay, chunking, saturation, state.

Levels are measured on one second of steady-state output with a Hann-windowed FFT, so every test
tone (a whole number of Hz) falls on a bin and its amplitude reads exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from bridge.audio import resample
from bridge.audio.pcm import ENGINE_RATE_HZ, TWILIO_RATE_HZ, Pcm16
from bridge.audio.resample import (
    DOWNSAMPLE_16K_DELAY_MS,
    DOWNSAMPLE_DELAY_MS,
    DOWNSAMPLE_DELAY_SAMPLES,
    RATE_16K_HZ,
    UPSAMPLE_DELAY_MS,
    UPSAMPLE_DELAY_SAMPLES,
    Downsampler16kTo8k,
    Downsampler24kTo8k,
    Upsampler8kTo24k,
)

Samples = NDArray[np.int16]
Resampler = Upsampler8kTo24k | Downsampler24kTo8k | Downsampler16kTo8k

# The acceptance floor is 60 dB; the design gives ~88 dB at the 4.6 kHz edge and more beyond,
# so 80 dB catches a regression well before it would matter.
MIN_REJECTION_DB = 80.0
PASSBAND_TOLERANCE_DB = 0.5
AMPLITUDE = 16000.0
SETTLE_S = 0.1  # dropped from the start of every output: the filter starts from silence


def tone(freq_hz: float, rate_hz: int, seconds: float, amplitude: float = AMPLITUDE) -> Samples:
    n = np.arange(round(seconds * rate_hz))
    return np.rint(amplitude * np.sin(2 * np.pi * freq_hz * n / rate_hz)).astype(np.int16)


def steady_second(samples: Samples, rate_hz: int) -> NDArray[np.float64]:
    """Exactly one second of output after the start-up transient."""
    start = round(SETTLE_S * rate_hz)
    second = samples[start : start + rate_hz].astype(np.float64)
    assert len(second) == rate_hz
    return second


def amplitude_spectrum(second: NDArray[np.float64]) -> NDArray[np.float64]:
    """Sine amplitude per 1 Hz bin (Hann window, corrected for its coherent gain)."""
    window = np.hanning(len(second))
    spectrum: NDArray[np.float64] = 2 * np.abs(np.fft.rfft(second * window)) / window.sum()
    return spectrum


def level_db(second: NDArray[np.float64], freq_hz: int) -> float:
    """Level of ``freq_hz`` relative to ``AMPLITUDE``; ±2 bins allow for Hann's main lobe."""
    spectrum = amplitude_spectrum(second)
    peak = spectrum[max(freq_hz - 2, 0) : freq_hz + 3].max()
    return float(20 * np.log10(max(peak, 1e-12) / AMPLITUDE))


def feed(resampler: Resampler, samples: Samples, chunk_sizes: Sequence[int]) -> Samples:
    """Feed ``samples`` in chunks whose sizes cycle through ``chunk_sizes``."""
    out: list[Samples] = []
    position, index = 0, 0
    while position < len(samples):
        size = chunk_sizes[index % len(chunk_sizes)]
        out.append(resampler.process(samples[position : position + size]))
        position += size
        index += 1
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int16)


def white_noise(count: int, seed: int = 1, scale: float = 12000.0) -> Samples:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0.0, scale, count), -32768, 32767).astype(np.int16)


# --- rejection -------------------------------------------------------------------------------


@pytest.mark.parametrize("freq_hz", [300, 1000, 2000, 3000, 3400])
def test_upsampling_rejects_images(freq_hz: int) -> None:
    out = Upsampler8kTo24k().process(tone(freq_hz, TWILIO_RATE_HZ, 1.2))
    second = steady_second(out, ENGINE_RATE_HZ)
    # Zero-stuffing puts images at 8k ± f and 16k ± f; below the 12 kHz Nyquist frequency of the
    # output those are 8k - f and 8k + f (16k ± f fold onto them: 1 kHz -> 7, 9, 15, 17 kHz).
    images = [8000 - freq_hz, 8000 + freq_hz]
    assert abs(level_db(second, freq_hz)) < PASSBAND_TOLERANCE_DB
    for image_hz in images:
        assert level_db(second, image_hz) < -MIN_REJECTION_DB, image_hz


@pytest.mark.parametrize("freq_hz", [4600, 5000, 6000, 7000, 9000, 10000, 11500])
def test_downsampling_rejects_aliases(freq_hz: int) -> None:
    out = Downsampler24kTo8k().process(tone(freq_hz, ENGINE_RATE_HZ, 1.2))
    second = steady_second(out, TWILIO_RATE_HZ)
    # Whatever the tone folds to (4.6 kHz -> 3.4 kHz, 9 kHz -> 1 kHz ...), nothing anywhere in
    # the 8 kHz output may come within MIN_REJECTION_DB of the input level.
    worst_db = 20 * np.log10(max(amplitude_spectrum(second).max(), 1e-12) / AMPLITUDE)
    assert worst_db < -MIN_REJECTION_DB


# --- passband ----------------------------------------------------------------------------------


@pytest.mark.parametrize("freq_hz", [100, 300, 1000, 2000, 3000, 3400])
def test_passband_is_flat_both_ways(freq_hz: int) -> None:
    up = Upsampler8kTo24k().process(tone(freq_hz, TWILIO_RATE_HZ, 1.2))
    down = Downsampler24kTo8k().process(tone(freq_hz, ENGINE_RATE_HZ, 1.2))
    assert abs(level_db(steady_second(up, ENGINE_RATE_HZ), freq_hz)) < PASSBAND_TOLERANCE_DB
    assert abs(level_db(steady_second(down, TWILIO_RATE_HZ), freq_hz)) < PASSBAND_TOLERANCE_DB


def test_every_polyphase_branch_has_dc_gain_one_and_the_filter_is_symmetric() -> None:
    # Branch sums of exactly 1 give unity gain both ways and no 8/16 kHz image of DC upwards.
    # The plain Kaiser design is off by ~1e-5, below what int16 output can show, so this looks
    # at the coefficients; symmetry is what keeps the phase linear.
    taps = resample._UP_TAPS
    assert np.abs(taps.reshape(-1, resample.RATIO).sum(axis=0) - 1.0).max() < 1e-12
    real = taps[: resample.FILTER_TAPS]
    assert np.abs(real - real[::-1]).max() < 1e-15
    assert np.all(taps[resample.FILTER_TAPS :] == 0)


def test_dc_gain_is_exactly_one_on_every_phase() -> None:
    # Each upsampling branch sums to 1, so all three output phases reproduce DC exactly.
    constant = np.full(400, 12345, dtype=np.int16)
    up = Upsampler8kTo24k().process(constant)
    down = Downsampler24kTo8k().process(np.full(1200, 12345, dtype=np.int16))
    assert np.all(up[300:] == 12345)
    assert np.all(down[100:] == 12345)


# --- delay --------------------------------------------------------------------------------------


def test_delays_are_short() -> None:
    assert UPSAMPLE_DELAY_MS <= 5.0
    assert DOWNSAMPLE_DELAY_MS <= 5.0
    assert math.isclose(UPSAMPLE_DELAY_MS, 1000 * UPSAMPLE_DELAY_SAMPLES / ENGINE_RATE_HZ)
    assert math.isclose(DOWNSAMPLE_DELAY_MS, 1000 * DOWNSAMPLE_DELAY_SAMPLES / TWILIO_RATE_HZ)


def test_impulse_response_is_symmetric_about_the_stated_delay() -> None:
    # Symmetric about its peak means linear phase: every frequency is delayed the same.
    impulse = np.zeros(100, dtype=np.int16)
    impulse[10] = 30000
    up = Upsampler8kTo24k().process(impulse).astype(np.int64)
    centre = 3 * 10 + UPSAMPLE_DELAY_SAMPLES
    assert int(np.argmax(up)) == centre
    half = UPSAMPLE_DELAY_SAMPLES
    assert np.abs(up[centre - half : centre] - up[centre + half : centre : -1]).max() <= 1


def band_limited(rate_hz: int, seconds: float, seed: int = 7) -> NDArray[np.float64]:
    """A random sum of sines within 100-3300 Hz, sampled exactly at ``rate_hz``."""
    rng = np.random.default_rng(seed)
    freqs = rng.uniform(100, 3300, 40)
    phases = rng.uniform(0, 2 * np.pi, 40)
    t = np.arange(round(seconds * rate_hz)) / rate_hz
    signal = np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None]).sum(axis=0)
    scaled: NDArray[np.float64] = 8000 * signal / np.abs(signal).max()
    return scaled


def lag_of_peak(output: Samples, reference: NDArray[np.float64], max_lag: int) -> int:
    """The lag (in samples) at which ``output`` best matches ``reference`` delayed."""
    lags = np.arange(max_lag)
    n = len(reference) - max_lag
    scores = [float(np.dot(output[lag : lag + n], reference[:n])) for lag in lags]
    return int(lags[int(np.argmax(scores))])


def test_cross_correlation_delay_matches_the_constants() -> None:
    # The same continuous signal sampled at both rates: the output should match the reference
    # at the output rate best when shifted by exactly the stated delay.
    at_8k, at_24k = band_limited(TWILIO_RATE_HZ, 0.5), band_limited(ENGINE_RATE_HZ, 0.5)
    up = Upsampler8kTo24k().process(np.rint(at_8k).astype(np.int16))
    assert lag_of_peak(up, at_24k, 200) == UPSAMPLE_DELAY_SAMPLES
    down = Downsampler24kTo8k().process(np.rint(at_24k).astype(np.int16))
    assert lag_of_peak(down, at_8k, 60) == DOWNSAMPLE_DELAY_SAMPLES


# --- streaming ----------------------------------------------------------------------------------

CHUNKINGS = [[1], [7], [160], [4801], [0, 3, 0, 1, 480, 2, 0, 161], [5, 1, 4801, 0, 13]]


@pytest.mark.parametrize("chunk_sizes", CHUNKINGS)
@pytest.mark.parametrize(
    ("make", "count"), [(Upsampler8kTo24k, 12000), (Downsampler24kTo8k, 36001)]
)
def test_chunked_equals_one_shot(
    make: Callable[[], Resampler], count: int, chunk_sizes: list[int]
) -> None:
    samples = white_noise(count)
    one_shot = make().process(samples)
    chunked = feed(make(), samples, chunk_sizes)
    assert len(chunked) == len(one_shot)
    assert np.abs(chunked.astype(np.int32) - one_shot.astype(np.int32)).max() <= 1


@pytest.mark.parametrize("chunk_sizes", CHUNKINGS)
def test_output_counts(chunk_sizes: list[int]) -> None:
    up, down = Upsampler8kTo24k(), Downsampler24kTo8k()
    total_up_in = total_up_out = total_down_in = total_down_out = 0
    for index in range(40):
        size = chunk_sizes[index % len(chunk_sizes)]
        up_out = up.process(white_noise(size, seed=index))
        assert len(up_out) == 3 * size
        total_up_in, total_up_out = total_up_in + size, total_up_out + len(up_out)
        total_down_out += len(down.process(white_noise(size, seed=index)))
        total_down_in += size
        # Every output the input so far determines comes out at once: nothing held back.
        assert total_down_out == total_down_in // 3
    assert total_up_out == 3 * total_up_in


@pytest.mark.parametrize("make", [Upsampler8kTo24k, Downsampler24kTo8k])
def test_empty_chunk_returns_empty_and_changes_nothing(make: Callable[[], Resampler]) -> None:
    samples = white_noise(1000)
    plain, interrupted = make(), make()
    out = interrupted.process(np.zeros(0, dtype=np.int16))
    assert out.dtype == np.int16
    assert len(out) == 0
    first = interrupted.process(samples[:500])
    interrupted.process(np.zeros(0, dtype=np.int16))
    second = interrupted.process(samples[500:])
    assert np.array_equal(np.concatenate((first, second)), plain.process(samples))


@pytest.mark.parametrize("make", [Upsampler8kTo24k, Downsampler24kTo8k])
def test_reset_starts_a_fresh_stream(make: Callable[[], Resampler]) -> None:
    samples = white_noise(1001)
    used = make()
    used.process(white_noise(500, seed=3))
    used.reset()
    assert np.array_equal(used.process(samples), make().process(samples))


# --- saturation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "rate_hz"), [(Upsampler8kTo24k, TWILIO_RATE_HZ), (Downsampler24kTo8k, ENGINE_RATE_HZ)]
)
def test_full_scale_input_saturates_instead_of_wrapping(
    make: Callable[[], Resampler], rate_hz: int
) -> None:
    # A full-scale 200 Hz square wave: the band-limited edges overshoot (Gibbs) past int16.
    n = np.arange(rate_hz // 2)
    square = np.where((n * 200 // rate_hz) % 2 == 0, 32767, -32768).astype(np.int16)
    out = make().process(square).astype(np.int32)
    # The same input at half scale does not clip; doubled and clipped it is what full scale
    # must give (within the rounding of the two paths).
    half = make().process((square // 2).astype(np.int16)).astype(np.int32)
    expected = np.clip(2 * half, -32768, 32767)
    assert out.max() == 32767
    assert out.min() == -32768
    assert 2 * half.max() > 32767  # the overshoot really happened
    assert np.abs(out - expected).max() <= 3


# --- typing at the edges ------------------------------------------------------------------------


def test_process_pcm_checks_and_converts_rates() -> None:
    up = Upsampler8kTo24k().process_pcm(Pcm16(white_noise(160), TWILIO_RATE_HZ))
    assert (up.rate_hz, len(up.samples)) == (ENGINE_RATE_HZ, 480)
    down = Downsampler24kTo8k().process_pcm(Pcm16(white_noise(480), ENGINE_RATE_HZ))
    assert (down.rate_hz, len(down.samples)) == (TWILIO_RATE_HZ, 160)
    with pytest.raises(ValueError, match="8000 Hz"):
        Upsampler8kTo24k().process_pcm(Pcm16(white_noise(480), ENGINE_RATE_HZ))
    with pytest.raises(ValueError, match="24000 Hz"):
        Downsampler24kTo8k().process_pcm(Pcm16(white_noise(160), TWILIO_RATE_HZ))


@pytest.mark.parametrize("make", [Upsampler8kTo24k, Downsampler24kTo8k])
def test_rejects_multichannel_input(make: Callable[[], Resampler]) -> None:
    with pytest.raises(ValueError, match="mono"):
        make().process(np.zeros((160, 2), dtype=np.int16))


# --- 16 kHz → 8 kHz (vendors that speak 16 kHz) ---------------------------------------------


@pytest.mark.parametrize("freq_hz", [4600, 5000, 6000, 7000, 7900])
def test_16k_downsampling_rejects_aliases(freq_hz: int) -> None:
    out = Downsampler16kTo8k().process(tone(freq_hz, RATE_16K_HZ, 1.2))
    worst_db = 20 * np.log10(
        max(amplitude_spectrum(steady_second(out, TWILIO_RATE_HZ)).max(), 1e-12) / AMPLITUDE
    )
    assert worst_db < -MIN_REJECTION_DB


@pytest.mark.parametrize("freq_hz", [100, 300, 1000, 2000, 3000, 3400])
def test_16k_passband_is_flat(freq_hz: int) -> None:
    out = Downsampler16kTo8k().process(tone(freq_hz, RATE_16K_HZ, 1.2))
    assert abs(level_db(steady_second(out, TWILIO_RATE_HZ), freq_hz)) < PASSBAND_TOLERANCE_DB


@pytest.mark.parametrize("chunk_sizes", CHUNKINGS)
def test_16k_chunked_equals_one_shot_and_holds_nothing_back(chunk_sizes: list[int]) -> None:
    samples = white_noise(24001)
    one_shot = Downsampler16kTo8k().process(samples)
    chunked = feed(Downsampler16kTo8k(), samples, chunk_sizes)
    assert len(chunked) == len(one_shot) == len(samples) // 2
    assert np.abs(chunked.astype(np.int32) - one_shot.astype(np.int32)).max() <= 1


def test_16k_delay_matches_the_constant() -> None:
    impulse = np.zeros(400, dtype=np.int16)
    impulse[200] = 20000  # at 16 kHz: 100 samples at 8 kHz
    out = Downsampler16kTo8k().process(impulse)
    peak = int(np.argmax(np.abs(out.astype(np.int32))))
    assert 1000 * (peak - 100) / TWILIO_RATE_HZ == pytest.approx(DOWNSAMPLE_16K_DELAY_MS, abs=0.07)
    assert Downsampler16kTo8k().process_pcm(Pcm16(impulse, RATE_16K_HZ)).rate_hz == 8000
