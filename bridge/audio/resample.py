"""Streaming resamplers between Twilio's 8 kHz and the engines' 24 kHz (3:1, both ways) and
16 kHz (2:1, down only) PCM16.

Each audio stream owns one resampler per direction; the resampler keeps the filter history (and,
downwards, the phase remainder) so that feeding 20 ms frames gives the same samples as feeding
the whole call at once, with no clicks at frame boundaries.

Why not soxr or ``audioop.ratecv``: soxr releases output in blocks, holding 60-180 ms back at
these ratios unless flushed, and ``ratecv`` has no anti-alias filter (a 6 kHz tone at 24 kHz comes
out of 24→8 kHz at 2 kHz, full level). The ratio is fixed, so one small linear-phase FIR run as a
polyphase filter in numpy costs ~15 µs per 20 ms frame, delays ~2 ms and returns every output
sample the input determines, on every call.

Filter design (one prototype serves both directions): a Kaiser-windowed sinc at 24 kHz.

* Passband 0-3.4 kHz (the telephone band), stopband from 4.6 kHz. Downwards, anything above
  4.6 kHz would fold below 8 - 4.6 = 3.4 kHz, into the band we keep; upwards, the images of
  0-3.4 kHz content start at 8 - 3.4 = 4.6 kHz. 4-4.6 kHz may alias into 3.4-4 kHz, which the
  telephone channel (300-3400 Hz) does not carry anyway.
* 95 taps (odd: an integer delay of 47 samples at 24 kHz), padded with one zero to 96 = 3 x 32 so
  each polyphase branch has 32 taps. Kaiser beta 9.0 and cutoff 3870 Hz were chosen by a grid
  search (offline) for the deepest stopband with at most 0.2 dB of droop at 3.4 kHz: ~88 dB
  from 4.6 kHz, more further out. numpy builds the filter at import; scipy is not needed.
* Each branch is scaled to a DC gain of exactly 1, so upsampled DC has no 8/16 kHz images and
  both directions have unity gain in the passband. The scaling keeps the filter symmetric (the
  branches pair up under k -> 94 - k), so the phase stays linear.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from bridge.audio.pcm import ENGINE_RATE_HZ, TWILIO_RATE_HZ, Pcm16, Samples

RATIO: Final = ENGINE_RATE_HZ // TWILIO_RATE_HZ
FILTER_TAPS: Final = 95
KAISER_BETA: Final = 9.0
CUTOFF_HZ: Final = 3870.0
TAPS_PER_PHASE: Final = -(-FILTER_TAPS // RATIO)

# Linear phase: the prototype delays by (taps - 1) / 2 samples at 24 kHz.
_CENTRE_24K: Final = (FILTER_TAPS - 1) // 2
UPSAMPLE_DELAY_SAMPLES: Final = _CENTRE_24K  # at 24 kHz
UPSAMPLE_DELAY_MS: Final = 1000.0 * UPSAMPLE_DELAY_SAMPLES / ENGINE_RATE_HZ
# Output m of the downsampler is aligned with input 3m + 2 (the last input it needs), so the
# delay is 47 - 2 = 45 samples at 24 kHz: a whole number (15) of 8 kHz samples.
DOWNSAMPLE_DELAY_SAMPLES: Final = (_CENTRE_24K - (RATIO - 1)) // RATIO  # at 8 kHz
DOWNSAMPLE_DELAY_MS: Final = 1000.0 * DOWNSAMPLE_DELAY_SAMPLES / TWILIO_RATE_HZ

# 16 kHz (some vendors' output): the same band edges at 16 kHz need ~76 taps for ~88 dB with
# beta 9; 79 (odd: linear phase, a whole-sample delay of 39 at 16 kHz). Output m is aligned
# with input 2m + 1, so the delay is (39 - 1) / 2 = 19 samples at 8 kHz.
RATE_16K_HZ: Final = 16000
FILTER_16K_TAPS: Final = 79
DOWNSAMPLE_16K_DELAY_MS: Final = 1000.0 * ((FILTER_16K_TAPS - 1) // 2 - 1) / 2 / TWILIO_RATE_HZ

_INT16_MIN: Final = -32768
_INT16_MAX: Final = 32767

Floats = NDArray[np.float64]


def _design_upsampling_filter() -> Floats:
    """The prototype with gain ``RATIO``: each polyphase branch sums to exactly 1."""
    cutoff = 2 * CUTOFF_HZ / ENGINE_RATE_HZ  # as a fraction of the 24 kHz Nyquist frequency
    n = np.arange(FILTER_TAPS) - _CENTRE_24K
    taps = cutoff * np.sinc(cutoff * n) * np.kaiser(FILTER_TAPS, KAISER_BETA)
    padded = np.zeros(TAPS_PER_PHASE * RATIO)
    padded[:FILTER_TAPS] = taps
    branches = padded.reshape(TAPS_PER_PHASE, RATIO)  # branches[j, r] = h[3j + r]
    branches /= branches.sum(axis=0)
    return padded


_UP_TAPS: Final = _design_upsampling_filter()
# Windows hold inputs oldest first, so the coefficients run newest first: _UP_MATRIX[i, r] is
# h[3(P - 1 - i) + r], and one matrix product computes all three output phases of every input.
_UP_MATRIX: Final = np.ascontiguousarray(_UP_TAPS.reshape(TAPS_PER_PHASE, RATIO)[::-1])
_DOWN_TAPS_REVERSED: Final = np.ascontiguousarray(_UP_TAPS[::-1] / RATIO)


def _to_int16(values: Floats) -> Samples:
    """Round and saturate: full-scale input overshoots (Gibbs) and must clip, not wrap."""
    # In place, and ufuncs rather than np.clip, whose Python wrapper costs more than the maths.
    np.rint(values, out=values)
    np.maximum(values, _INT16_MIN, out=values)
    np.minimum(values, _INT16_MAX, out=values)
    return values.astype(np.int16)


def _windows(signal: Floats, width: int, count: int, step: int) -> Floats:
    """Read-only view of ``count`` windows of ``width`` samples, ``step`` samples apart.

    The same as ``sliding_window_view(signal, width)[::step][:count]`` for a contiguous
    ``signal``, built with the ndarray constructor because ``sliding_window_view`` and
    ``as_strided`` spend 3-10 µs per call on argument handling (up to half the cost of a 20 ms
    frame). The constructor still refuses a view that would run past the end of ``signal``.
    """
    itemsize = signal.itemsize
    view: Floats = np.ndarray(
        (count, width), np.float64, buffer=signal, strides=(step * itemsize, itemsize)
    )
    view.flags.writeable = False
    return view


def _check_mono(samples: Samples) -> None:
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {samples.shape}")


class Upsampler8kTo24k:
    """8 kHz to 24 kHz, stateful: returns exactly three samples for every input sample."""

    in_rate_hz: Final = TWILIO_RATE_HZ
    out_rate_hz: Final = ENGINE_RATE_HZ

    def __init__(self) -> None:
        self._history: Floats = np.zeros(TAPS_PER_PHASE - 1)

    def reset(self) -> None:
        """Forget the history, as at the start of a new stream."""
        self._history = np.zeros(TAPS_PER_PHASE - 1)

    def process(self, samples: Samples) -> Samples:
        """Upsample one chunk of any length (empty included); delay is ``UPSAMPLE_DELAY_MS``."""
        _check_mono(samples)
        if len(samples) == 0:
            return np.zeros(0, dtype=np.int16)
        extended = np.concatenate((self._history, samples.astype(np.float64)))
        self._history = extended[len(extended) - (TAPS_PER_PHASE - 1) :]
        windows = _windows(extended, TAPS_PER_PHASE, len(samples), 1)
        # Row n holds output samples 3n, 3n + 1, 3n + 2: row-major ravel interleaves them.
        return _to_int16(np.dot(windows, _UP_MATRIX).ravel())

    def process_pcm(self, audio: Pcm16) -> Pcm16:
        """:meth:`process` on the internal audio type, checking its rate."""
        if audio.rate_hz != self.in_rate_hz:
            raise ValueError(f"expected {self.in_rate_hz} Hz audio, got {audio.rate_hz} Hz")
        return Pcm16(self.process(audio.samples), self.out_rate_hz)


class _Decimator:
    """Down to 8 kHz by a whole ratio, stateful: after ``t`` input samples in total,
    ``t // ratio`` have come out.

    Inputs not yet a multiple of the ratio are kept for the next call (the phase remainder), so
    any chunk length works; every output that the input so far determines is returned at once.
    """

    in_rate_hz: int
    out_rate_hz: Final = TWILIO_RATE_HZ
    _ratio: int
    _taps_reversed: Floats

    def __init__(self) -> None:
        self._pending: Floats = self._silence()

    def _silence(self) -> Floats:
        # Zero history such that the first full window ends at input ratio - 1: output m then
        # depends on inputs up to ratio * m + ratio - 1, so total out == total in // ratio.
        return np.zeros(len(self._taps_reversed) - self._ratio)

    def reset(self) -> None:
        """Forget the history and the phase remainder, as at the start of a new stream."""
        self._pending = self._silence()

    def process(self, samples: Samples) -> Samples:
        """Downsample one chunk of any length."""
        _check_mono(samples)
        ratio, window = self._ratio, len(self._taps_reversed)
        pending = np.concatenate((self._pending, samples.astype(np.float64)))
        count = (len(pending) - window) // ratio + 1
        if count <= 0:
            self._pending = pending
            return np.zeros(0, dtype=np.int16)
        # Polyphase decimation: only every ratio-th window, i.e. only the outputs kept, is
        # computed; the strided view copies nothing.
        windows = _windows(pending, window, count, ratio)
        self._pending = pending[ratio * count :]
        # np.dot, not @: on a strided view it skips a contiguous copy (about 2x faster here).
        return _to_int16(np.dot(windows, self._taps_reversed))

    def process_pcm(self, audio: Pcm16) -> Pcm16:
        """:meth:`process` on the internal audio type, checking its rate."""
        if audio.rate_hz != self.in_rate_hz:
            raise ValueError(f"expected {self.in_rate_hz} Hz audio, got {audio.rate_hz} Hz")
        return Pcm16(self.process(audio.samples), self.out_rate_hz)


class Downsampler24kTo8k(_Decimator):
    """24 kHz to 8 kHz (3:1); delay is ``DOWNSAMPLE_DELAY_MS``."""

    in_rate_hz = ENGINE_RATE_HZ
    _ratio = RATIO
    _taps_reversed = _DOWN_TAPS_REVERSED


def _design_16k_filter() -> Floats:
    """The same telephone-band low-pass designed at 16 kHz, unity DC gain (symmetric)."""
    cutoff = 2 * CUTOFF_HZ / RATE_16K_HZ  # as a fraction of the 16 kHz Nyquist frequency
    n = np.arange(FILTER_16K_TAPS) - (FILTER_16K_TAPS - 1) // 2
    taps = cutoff * np.sinc(cutoff * n) * np.kaiser(FILTER_16K_TAPS, KAISER_BETA)
    return np.ascontiguousarray((taps / taps.sum())[::-1])


class Downsampler16kTo8k(_Decimator):
    """16 kHz to 8 kHz (2:1), for vendors that speak 16 kHz; delay is
    ``DOWNSAMPLE_16K_DELAY_MS``."""

    in_rate_hz = RATE_16K_HZ
    _ratio = 2
    _taps_reversed = _design_16k_filter()
