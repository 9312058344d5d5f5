"""The simulator's WAV input (any common WAV to 8 kHz μ-law) and output (8 kHz PCM16)."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.sim.wav import (
    DEMO_AUDIO,
    WavError,
    read_wav,
    to_twilio_ulaw,
    write_ulaw_as_wav,
)
from tests.call_helpers import envelope
from tests.fakes.audio import dominant_frequency, rms, sine, ulaw_to_pcm16


def riff(format_tag: int, channels: int, rate: int, bits: int, data: bytes) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # an odd chunk, padded: skipped
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tone(rate: int, seconds: float = 0.5, freq: float = 1000.0) -> np.ndarray:
    return sine(freq, int(rate * seconds), rate, 16000).astype(np.float64) / 32768.0


@pytest.mark.parametrize(
    ("label", "tag", "bits", "encode"),
    [
        ("pcm8", 1, 8, lambda x: (np.round(x * 127) + 128).astype(np.uint8).tobytes()),
        ("pcm16", 1, 16, lambda x: np.round(x * 32767).astype("<i2").tobytes()),
        (
            "pcm24",
            1,
            24,
            lambda x: b"".join(
                int(v).to_bytes(3, "little", signed=True) for v in np.round(x * 8388607)
            ),
        ),
        ("pcm32", 1, 32, lambda x: np.round(x * 2147483647).astype("<i4").tobytes()),
        ("float32", 3, 32, lambda x: x.astype("<f4").tobytes()),
    ],
)
def test_any_common_wav_becomes_8k_ulaw(
    tmp_path: Path, label: str, tag: int, bits: int, encode: object
) -> None:
    """44.1 kHz stereo in every sample format: resampled, mixed to mono, the tone kept."""
    rate = 44100
    mono = tone(rate)
    stereo = np.repeat(mono, 2)  # interleaved L R
    path = tmp_path / f"{label}.wav"
    assert callable(encode)
    path.write_bytes(riff(tag, 2, rate, bits, encode(stereo)))
    ulaw = to_twilio_ulaw(path)
    assert abs(len(ulaw) - 4000) <= 1  # 0.5 s at 8 kHz
    samples = ulaw_to_pcm16(ulaw)
    assert abs(dominant_frequency(samples[400:-400], 8000) - 1000) < 20
    assert abs(rms(samples[400:-400]) - 16000 / np.sqrt(2)) < 800


def test_aliasing_is_filtered_when_downsampling(tmp_path: Path) -> None:
    """A 6 kHz tone at 48 kHz is above 8 kHz's Nyquist: it must vanish, not fold to 2 kHz."""
    path = tmp_path / "high.wav"
    path.write_bytes(
        riff(1, 1, 48000, 16, np.round(tone(48000, freq=6000) * 32767).astype("<i2").tobytes())
    )
    samples = ulaw_to_pcm16(to_twilio_ulaw(path))
    assert rms(samples[400:-400]) < 16000 / np.sqrt(2) / 1000  # >60 dB down


def test_fixtures_at_24k_and_8k_say_the_same(tmp_path: Path) -> None:
    eight = ulaw_to_pcm16(to_twilio_ulaw(DEMO_AUDIO / "caller_es_8k_mulaw.wav"))
    from24 = ulaw_to_pcm16(to_twilio_ulaw(DEMO_AUDIO / "caller_es_24k_pcm16.wav"))
    assert abs(len(eight) - len(from24)) < 80
    n = min(len(eight), len(from24))
    # Loudness over 20 ms blocks: SoX and this module filter differently, so samples do not
    # line up one for one, but the speech's shape must.
    corr = np.corrcoef(envelope(eight[:n], 8000), envelope(from24[:n], 8000))[0, 1]
    assert corr > 0.95


def test_alaw_and_refusals(tmp_path: Path) -> None:
    alaw = tmp_path / "alaw.wav"
    alaw.write_bytes(riff(6, 1, 8000, 8, bytes([0xD5]) * 800))  # A-law silence
    assert rms(ulaw_to_pcm16(to_twilio_ulaw(alaw))) < 50
    adpcm = tmp_path / "adpcm.wav"
    adpcm.write_bytes(riff(2, 1, 8000, 4, b"\x00" * 100))
    with pytest.raises(WavError, match="unsupported"):
        to_twilio_ulaw(adpcm)
    text = tmp_path / "text.wav"
    text.write_text("hello")
    with pytest.raises(WavError, match="not a RIFF"):
        read_wav(text)


def test_heard_audio_is_written_as_8k_pcm16(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "heard.wav"
    write_ulaw_as_wav(path, bytes([0xFF]) * 1600)
    with wave.open(str(path), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        assert wav.getnframes() == 1600
