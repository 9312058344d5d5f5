"""Sample arithmetic for what a listener hears: levels, the passthrough mix, the echo guard's gain.

Pure functions on 8 kHz int16 frames; no state but what callers pass in.

Levels chosen (README "Listening experience"):

* The original voice is mixed under the translation at ``PASSTHROUGH_DB`` (default -14 dB):
  loud enough to hear who is talking, their tone, and words the model leaves untranslated
  (names, numbers, speech already in the listener's language), quiet enough not to compete.
  That is about the "original audio at 20 %" that conference interpretation consoles default to.
* While translated speech plays, the original is ducked by a further ``DUCK_DB`` (default
  -12 dB, so -26 dB in all): present as a cue, but never masking the interpreter.
* Gain changes ramp across one 20 ms frame, so ducking never clicks.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from bridge.audio.echo_guard import echo_match
from bridge.audio.pcm import Samples

INT16_MIN, INT16_MAX = -32768, 32767
Floats = NDArray[np.float64]


def db_to_gain(db: float | None) -> float:
    """Amplitude factor for a level in dB (``None`` means off: 0)."""
    return 0.0 if db is None else float(10.0 ** (db / 20.0))


def rms(samples: Samples) -> float:
    if len(samples) == 0:
        return 0.0
    x = samples.astype(np.float64)
    # A dot product, not mean(x ** 2): this runs for every 20 ms frame of every leg, and on
    # 160 samples numpy's per-call overhead is most of the cost.
    return float(np.sqrt(np.dot(x, x) / len(x)))


# The same ramp shape for every frame length: 0, 1/n, …, (n-1)/n (cached per length).
_RAMPS: dict[int, Floats] = {}


def _ramp(n: int) -> Floats:
    ramp = _RAMPS.get(n)
    if ramp is None:
        ramp = _RAMPS[n] = np.arange(n, dtype=np.float64) / n
    return ramp


def mix(
    translated: Samples | None, passthrough: Samples | None, gain_from: float, gain_to: float
) -> Samples:
    """``translated + gain * passthrough`` with the gain ramped across the frame, saturating.

    Either input may be missing (silence); both, when present, have the same length.
    Runs for every outbound 20 ms frame, so it avoids numpy calls it does not need (a steady
    gain needs no ramp) and works in place.
    """
    if passthrough is None or not (gain_from or gain_to):
        if translated is None:
            assert passthrough is not None, "nothing to mix"
            return np.zeros(len(passthrough), dtype=np.int16)
        return translated.copy()
    out = passthrough.astype(np.float64)
    if gain_from == gain_to:
        out *= gain_from
    else:
        # gain_from + (gain_to - gain_from) * k / n: np.linspace(..., endpoint=False)'s values.
        out *= gain_from + (gain_to - gain_from) * _ramp(len(out))
    if translated is not None:
        out += translated
    # Round, then saturate: two loud signals must clip, never wrap around.
    np.rint(out, out=out)
    np.maximum(out, INT16_MIN, out=out)
    np.minimum(out, INT16_MAX, out=out)
    return out.astype(np.int16)


def scale(samples: Samples, gain: float) -> Samples:
    """``samples * gain``, rounded and saturating."""
    if gain == 1.0:
        return samples
    scaled = np.rint(samples.astype(np.float64) * gain)
    return np.clip(scaled, INT16_MIN, INT16_MAX).astype(np.int16)


def echo_likeness(mic: Samples, played: Samples) -> float:
    """How much ``mic`` looks like a (delayed, scaled) copy of part of ``played``, 0..1 (the
    echo guard's measure: :func:`bridge.audio.echo_guard.echo_match`)."""
    return echo_match(mic, played)[0]
