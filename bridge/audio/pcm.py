"""The one internal audio type, and the G.711 μ-law codec at the edges.

Inside the bridge audio is always :class:`Pcm16`: signed 16-bit mono samples that carry their
sample rate. μ-law exists only where Twilio frames are read or written, base64 only in the wire
modules.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

with warnings.catch_warnings():
    # audioop is deprecated in 3.11/3.12 and gone in 3.13, where the audioop-lts package
    # provides the same module name; its G.711 codec is exact and runs in C.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

TWILIO_RATE_HZ = 8000
ENGINE_RATE_HZ = 24000
FRAME_MS = 20
# One Twilio media frame: 20 ms of 8 kHz μ-law, one byte a sample.
TWILIO_FRAME_BYTES = TWILIO_RATE_HZ * FRAME_MS // 1000
ULAW_SILENCE = 0xFF
SAMPLE_WIDTH = 2

Samples = NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class Pcm16:
    """Mono signed 16-bit PCM samples at ``rate_hz``."""

    samples: Samples
    rate_hz: int

    @property
    def duration_ms(self) -> float:
        return 1000.0 * len(self.samples) / self.rate_hz

    @classmethod
    def from_bytes(cls, data: bytes, rate_hz: int) -> Pcm16:
        """Little-endian PCM16 bytes (odd trailing byte dropped) to samples."""
        usable = len(data) - (len(data) % SAMPLE_WIDTH)
        return cls(np.frombuffer(data[:usable], dtype="<i2").astype(np.int16), rate_hz)

    def to_bytes(self) -> bytes:
        return self.samples.astype("<i2", copy=False).tobytes()


def ulaw_to_pcm16(ulaw: bytes) -> Pcm16:
    """Decode 8 kHz G.711 μ-law bytes."""
    linear = audioop.ulaw2lin(ulaw, SAMPLE_WIDTH)
    return Pcm16(
        np.frombuffer(linear, dtype=np.int16 if sys.byteorder == "little" else ">i2").astype(
            np.int16
        ),
        TWILIO_RATE_HZ,
    )


def pcm16_to_ulaw(audio: Pcm16) -> bytes:
    """Encode 8 kHz PCM16 as G.711 μ-law bytes."""
    if audio.rate_hz != TWILIO_RATE_HZ:
        raise ValueError(f"μ-law is 8 kHz here, got {audio.rate_hz} Hz")
    return audioop.lin2ulaw(audio.samples.astype(np.int16, copy=False).tobytes(), SAMPLE_WIDTH)
