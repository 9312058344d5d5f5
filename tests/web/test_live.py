"""Live checks against the real OpenAI translation endpoint (network and a key needed).

Skipped unless ``OPENAI_API_KEY`` is set (and ``BRIDGE_LIVE_TESTS=1``, so a developer's key in
the environment does not make every test run spend money).
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from bridge.audio.pcm import Pcm16, ulaw_to_pcm16
from bridge.engines.contract import SessionSpec, TextKind
from bridge.engines.openai.translate_engine import OpenAIEngine
from bridge.engines.registry import settings_from_env
from bridge.ops.metrics import Metrics
from bridge.sim.wav import DEMO_AUDIO
from tests.fakes.audio import load_wav

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not os.environ.get("OPENAI_API_KEY") or os.environ.get("BRIDGE_LIVE_TESTS") != "1",
        reason="live test: set OPENAI_API_KEY and BRIDGE_LIVE_TESTS=1",
    ),
]
FIXTURES = DEMO_AUDIO


class Collector:
    def __init__(self) -> None:
        self.audio_samples = 0
        self.text: dict[str, str] = {"source": "", "translation": ""}
        self.failed: str | None = None
        self.lock = threading.Lock()

    def on_audio(self, audio: Pcm16, received_at: float) -> None:
        with self.lock:
            self.audio_samples += len(audio.samples)

    def on_text(self, kind: TextKind, text: str) -> None:
        with self.lock:
            self.text[kind] += text

    def on_failed(self, reason: str, *, opened: bool) -> None:
        self.failed = reason


def test_spanish_caller_is_translated_to_english() -> None:
    settings = settings_from_env(
        {
            "PUBLIC_BASE_URL": "https://example.invalid",
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "TWILIO_AUTH_TOKEN": "unused",
            "AGENT_NUMBER": "+15550000000",
            "OPENAI_API_KEY": os.environ["OPENAI_API_KEY"],
            **{k: os.environ[k] for k in ("OPENAI_BASE_URL",) if k in os.environ},
        },
        env_file=None,
    )
    collector = Collector()
    session = OpenAIEngine(settings, Metrics()).session(
        SessionSpec("CAlive", "caller_to_agent", "en"), collector
    )
    _, _, ulaw = load_wav(FIXTURES / "caller_es_8k_mulaw.wav")
    ulaw += b"\xff" * 8000 * 4  # keep sending silence while the translation finishes
    session.start()
    start = time.monotonic()
    for i in range(0, len(ulaw), 160):
        session.send_audio(ulaw_to_pcm16(ulaw[i : i + 160]))
        time.sleep(max(0.0, start + (i + 160) / 8000 - time.monotonic()))
    session.close()
    session.join(10)  # type: ignore[attr-defined]
    assert collector.failed is None
    assert collector.audio_samples > 24000  # more than a second of translated speech
    assert collector.text["translation"].strip()
