"""WAV files in and out: any common WAV becomes the 8 kHz μ-law a phone leg sends; what a leg
heard is written back as an 8 kHz PCM16 WAV anyone can play.

The stdlib ``wave`` module reads integer PCM only, and the shared fixtures are μ-law, so the
RIFF chunks are walked here. Understood: PCM 8/16/24/32-bit, IEEE float 32/64, G.711 μ-law and
A-law, mono or more channels (averaged), plain or ``WAVE_FORMAT_EXTENSIBLE``. Conversion happens
at load: a simulated call is seconds long, so holding it in memory is cheap.
"""

from __future__ import annotations

import struct
import sys
import warnings
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bridge.audio.pcm import TWILIO_RATE_HZ, Pcm16, pcm16_to_ulaw, ulaw_to_pcm16
from bridge.audio.resample import Downsampler24kTo8k

with warnings.catch_warnings():
    # See bridge.audio.pcm: audioop is the exact C G.711 codec (audioop-lts on 3.13).
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

WAVE_FORMAT_PCM = 1
WAVE_FORMAT_IEEE_FLOAT = 3
WAVE_FORMAT_ALAW = 6
WAVE_FORMAT_MULAW = 7
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_INT16_MAX = 32767
# The speech the demo and the tests call with (demo/audio/README.md says how it was made).
DEMO_AUDIO = Path(__file__).resolve().parents[2] / "demo" / "audio"
DEMO_CALLER_WAV = DEMO_AUDIO / "caller_es_24k_pcm16.wav"  # not 8 kHz μ-law: shows conversion
DEMO_AGENT_WAV = DEMO_AUDIO / "agent_en_8k_mulaw.wav"
# Half-width of the generic resampler's windowed-sinc kernel, in output-rate zero crossings:
# 16 gives > 60 dB of stop-band with a Kaiser window, plenty for a test signal on a phone line.
_SINC_HALF_WIDTH = 16
_KAISER_BETA = 8.0
_BLOCK = 4096

Floats = NDArray[np.float64]


class WavError(ValueError):
    """A file this module cannot read as audio."""


@dataclass(frozen=True, slots=True)
class WavData:
    """A WAV file's ``fmt `` facts and its raw ``data`` bytes."""

    rate_hz: int
    format_tag: int
    channels: int
    bits: int
    data: bytes


def read_wav(path: Path | str) -> WavData:
    """Walk the RIFF chunks of ``path`` to its ``fmt `` and ``data`` chunks."""
    blob = Path(path).read_bytes()
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise WavError(f"{path}: not a RIFF/WAVE file")
    offset = 12
    fmt: tuple[int, int, int, int] | None = None
    while offset + 8 <= len(blob):
        chunk_id = blob[offset : offset + 4]
        (size,) = struct.unpack_from("<I", blob, offset + 4)
        body = blob[offset + 8 : offset + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise WavError(f"{path}: fmt chunk too short")
            tag, channels, rate = struct.unpack_from("<HHI", body, 0)
            (bits,) = struct.unpack_from("<H", body, 14)
            if tag == WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
                (tag,) = struct.unpack_from("<H", body, 24)  # the sub-format GUID's first field
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise WavError(f"{path}: data chunk before fmt chunk")
            tag, channels, rate, bits = fmt
            return WavData(rate, tag, channels, bits, body)
        offset += 8 + size + (size & 1)  # RIFF chunks are padded to an even length
    raise WavError(f"{path}: no data chunk")


def _decode(wav: WavData) -> Floats:
    """Interleaved samples as floats in [-1, 1]."""
    tag, bits, data = wav.format_tag, wav.bits, wav.data
    if tag == WAVE_FORMAT_MULAW:
        return ulaw_to_pcm16(data).samples.astype(np.float64) / 32768.0
    if tag == WAVE_FORMAT_ALAW:
        linear = np.frombuffer(audioop.alaw2lin(data, 2), dtype=np.int16)
        if sys.byteorder != "little":
            linear = linear.byteswap()
        return linear.astype(np.float64) / 32768.0
    if tag == WAVE_FORMAT_IEEE_FLOAT and bits in (32, 64):
        usable = len(data) - len(data) % (bits // 8)
        values = np.frombuffer(data[:usable], dtype="<f4" if bits == 32 else "<f8")
        return np.clip(values.astype(np.float64), -1.0, 1.0)
    if tag == WAVE_FORMAT_PCM and bits in (8, 16, 24, 32):
        width = bits // 8
        usable = len(data) - len(data) % width
        if width == 1:  # 8-bit WAV is unsigned
            return (np.frombuffer(data[:usable], dtype=np.uint8).astype(np.float64) - 128) / 128
        if width == 3:  # little-endian 24-bit: widen to 32 by putting each sample in the top
            raw = np.frombuffer(data[:usable], dtype=np.uint8).reshape(-1, 3)
            padded = np.zeros((raw.shape[0], 4), dtype=np.uint8)
            padded[:, 1:] = raw
            return padded.view("<i4").ravel().astype(np.float64) / 2.0**31
        values = np.frombuffer(data[:usable], dtype=f"<i{width}")
        return values.astype(np.float64) / 2.0 ** (bits - 1)
    raise WavError(f"unsupported WAV encoding (format {tag}, {bits} bits)")


def _kaiser_sinc_resample(signal: Floats, from_hz: int, to_hz: int) -> Floats:
    """Band-limited resampling by any ratio: each output sample is a windowed-sinc sum of the
    input around its position, with the cut-off at the lower rate's Nyquist frequency."""
    ratio = to_hz / from_hz
    n_out = int(len(signal) * ratio)
    cutoff = min(1.0, ratio) * 0.95  # of the input's Nyquist: a little transition band
    half = int(np.ceil(_SINC_HALF_WIDTH / min(1.0, ratio)))
    padded = np.concatenate([np.zeros(half), signal, np.zeros(half + 1)])
    taps = np.arange(-half + 1, half + 1)
    out = np.empty(n_out)
    for begin in range(0, n_out, _BLOCK):
        positions = np.arange(begin, min(n_out, begin + _BLOCK)) / ratio
        base = np.floor(positions).astype(np.int64)
        index = base[:, None] + taps[None, :]
        distance = positions[:, None] - index
        window = np.kaiser(2 * half + 1, _KAISER_BETA)
        weight = cutoff * np.sinc(cutoff * distance)
        weight *= np.interp(distance, np.arange(-half, half + 1), window)
        out[begin : begin + len(positions)] = (padded[index + half] * weight).sum(axis=1)
    return out


def to_twilio_ulaw(path: Path | str) -> bytes:
    """A WAV file as the 8 kHz mono μ-law a Twilio Media Stream carries."""
    wav = read_wav(path)
    if wav.channels < 1:
        raise WavError(f"{path}: no channels")
    samples = _decode(wav)
    usable = len(samples) - len(samples) % wav.channels
    mono = samples[:usable].reshape(-1, wav.channels).mean(axis=1)
    pcm = np.round(np.clip(mono, -1.0, 1.0) * _INT16_MAX).astype(np.int16)
    if wav.rate_hz == TWILIO_RATE_HZ:
        return pcm16_to_ulaw(Pcm16(pcm, TWILIO_RATE_HZ))
    if wav.rate_hz == 3 * TWILIO_RATE_HZ:  # the bridge's own 3:1 filter fits exactly
        return pcm16_to_ulaw(Pcm16(Downsampler24kTo8k().process(pcm), TWILIO_RATE_HZ))
    resampled = _kaiser_sinc_resample(pcm.astype(np.float64), wav.rate_hz, TWILIO_RATE_HZ)
    clipped = np.clip(np.round(resampled), -32768, _INT16_MAX).astype(np.int16)
    return pcm16_to_ulaw(Pcm16(clipped, TWILIO_RATE_HZ))


def write_ulaw_as_wav(path: Path, ulaw: bytes) -> None:
    """Write 8 kHz μ-law audio as an 8 kHz mono PCM16 WAV (what every player opens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(TWILIO_RATE_HZ)
        out.writeframes(ulaw_to_pcm16(ulaw).to_bytes())
