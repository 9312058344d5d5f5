"""Audio helpers for the stand-ins: WAV fixtures, a G.711 μ-law codec and simple analysis.

The codec is deliberately independent of ``bridge.audio.pcm`` so that the tests check the bridge
rather than share its bugs (the WAV reader is the simulator's: it only walks RIFF chunks).
numpy only; nothing here touches a socket.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bridge.sim.wav import DEMO_AUDIO, read_wav

TWILIO_RATE_HZ = 8000
ENGINE_RATE_HZ = 24000
FRAME_MS = 20
TWILIO_FRAME_BYTES = TWILIO_RATE_HZ * FRAME_MS // 1000  # 160 μ-law bytes = 20 ms
ULAW_SILENCE_BYTE = 0xFF


# The speech fixtures live once in the repository, in demo/audio (see its README): the demo
# (`make demo`) calls with them, and the suite needs nothing outside the repository.
SHARED_AUDIO = DEMO_AUDIO
CALLER_ES_8K_MULAW = SHARED_AUDIO / "caller_es_8k_mulaw.wav"
AGENT_EN_8K_MULAW = SHARED_AUDIO / "agent_en_8k_mulaw.wav"
CALLER_ES_24K_PCM16 = SHARED_AUDIO / "caller_es_24k_pcm16.wav"
AGENT_EN_24K_PCM16 = SHARED_AUDIO / "agent_en_24k_pcm16.wav"

Int16Array = NDArray[np.int16]

_ULAW_BIAS = 0x84
_ULAW_CLIP_14 = 8159


def load_wav(path: Path | str) -> tuple[int, int, bytes]:
    """Read a WAV file's ``(sample_rate_hz, format_tag, data_bytes)`` (PCM or G.711 μ-law, which
    the stdlib ``wave`` module rejects), with the call simulator's RIFF reader."""
    wav = read_wav(path)
    return wav.rate_hz, wav.format_tag, wav.data


def _build_decode_table() -> Int16Array:
    codes = np.arange(256, dtype=np.int32)
    inverted = ~codes & 0xFF
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(inverted & 0x80, -magnitude, magnitude).astype(np.int16)


def _build_encode_table() -> NDArray[np.uint8]:
    # The reference G.711 encoder (Sun's g711.c, also CPython's audioop): 14-bit magnitude,
    # segment search, and the sign folded in by XOR.
    samples = np.arange(-32768, 32768, dtype=np.int64) >> 2
    mask = np.where(samples < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(samples), _ULAW_CLIP_14) + (_ULAW_BIAS >> 2)
    segment_ends = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    segment = np.searchsorted(segment_ends, magnitude, side="left")
    code = np.where(segment >= 8, 0x7F, (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F))
    table: NDArray[np.uint8] = ((code ^ mask) & 0xFF).astype(np.uint8)
    return table


_DECODE = _build_decode_table()
_ENCODE = _build_encode_table()


def ulaw_to_pcm16(data: bytes) -> Int16Array:
    """Decode G.711 μ-law bytes to int16 samples."""
    return _DECODE[np.frombuffer(data, dtype=np.uint8)]


def pcm16_to_ulaw(samples: Int16Array) -> bytes:
    """Encode int16 samples to G.711 μ-law bytes."""
    return bytes(_ENCODE[samples.astype(np.int32) + 32768])


def pcm16_from_bytes(data: bytes) -> Int16Array:
    """View little-endian PCM16 bytes as int16 samples (a trailing odd byte is ignored)."""
    usable = len(data) - (len(data) % 2)
    return np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)


def pcm16_to_bytes(samples: Int16Array) -> bytes:
    """Serialise int16 samples as little-endian PCM16 bytes."""
    return samples.astype("<i2").tobytes()


def rms(samples: Int16Array) -> float:
    """Root mean square level of ``samples`` (0.0 for an empty array)."""
    if samples.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def sine(
    freq_hz: float, n_samples: int, rate_hz: int, amplitude: float, start_sample: int = 0
) -> Int16Array:
    """``n_samples`` of a sine tone, phase-continuous from ``start_sample``."""
    t = (np.arange(n_samples, dtype=np.float64) + start_sample) / rate_hz
    return np.round(amplitude * np.sin(2.0 * np.pi * freq_hz * t)).astype(np.int16)


def dominant_frequency(samples: Int16Array, rate_hz: int) -> float:
    """Frequency (Hz) of the strongest FFT bin, ignoring DC; 0.0 for silence or too few samples."""
    if samples.size < 16 or rms(samples) == 0.0:
        return 0.0
    window = np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * window))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum) * rate_hz / samples.size)


def ulaw_silence(n_bytes: int) -> bytes:
    """``n_bytes`` of μ-law digital silence (0xFF decodes to 0)."""
    return bytes([ULAW_SILENCE_BYTE]) * n_bytes
