"""``ENGINE=relay``: each leg hears the other's original audio, unchanged and untranslated.

A way to check the telephony wiring end to end without any translation cost. Audio stays at
8 kHz, so μ-law → PCM16 → μ-law round-trips bit-exactly (G.711 is a lossless table here).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from bridge.audio.pcm import Pcm16
from bridge.engines.contract import SessionListener, SessionSpec, TranslationSession

if TYPE_CHECKING:
    from bridge.ops.metrics import Metrics
    from bridge.settings.env import Settings


def build(settings: Settings, metrics: Metrics) -> RelayEngine:
    return RelayEngine()


class RelaySession:
    def __init__(self, listener: SessionListener) -> None:
        self._listener = listener
        self._closed = False

    def start(self) -> None:
        """Nothing to connect."""

    def send_audio(self, audio: Pcm16) -> None:
        if not self._closed:
            self._listener.on_audio(audio, time.monotonic())

    def close(self) -> None:
        self._closed = True


class RelayEngine:
    name = "relay"

    def session(self, spec: SessionSpec, listener: SessionListener) -> TranslationSession:
        return RelaySession(listener)
