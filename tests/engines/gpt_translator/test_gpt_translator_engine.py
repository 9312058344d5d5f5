"""``ENGINE=gpt-translator``: its wire module, its settings, and what only this vendor does.

The shared suite (tests/engines/test_engines.py, tests/engines/test_engine_calls.py) covers
translation, silence, close, drops and refusal for every engine; here: readiness before audio, the
chunk format, the documented stop, ``insufficient_tokens`` (a session's and a whole call's polite
end), a bad key, a missing key at start-up, and the latency the engine adds.
"""

from __future__ import annotations

import base64
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from bridge.audio.pcm import TWILIO_RATE_HZ, Pcm16, ulaw_to_pcm16
from bridge.audio.resample import Upsampler8kTo24k
from bridge.engines.contract import SessionSpec, is_out_of_credit
from bridge.engines.gpt_translator import wire
from bridge.engines.gpt_translator.config import config_from_env
from bridge.engines.gpt_translator.engine import (
    CHUNK_SAMPLES,
    GptTranslatorSession,
)
from bridge.engines.registry import settings_from_env
from bridge.ops.metrics import Metrics
from bridge.settings.env import ConfigError
from bridge.settings.prompts import prompt
from tests.bridge_process import run_gunicorn_once
from tests.call_helpers import (
    BRIDGE_NUMBER,
    CALLER_NUMBER,
    agent_of,
    bridge_stack,
    tone_ulaw,
    wait_call_over,
)
from tests.engine_sessions import BASE_ENV, FRAME, SPEECH_HZ, Recorder, speak
from tests.fakes.audio import CALLER_ES_8K_MULAW, ENGINE_RATE_HZ, load_wav, sine, ulaw_silence
from tests.fakes.gpt_translator import API_KEY, FakeGptTranslator
from tests.fakes.openai_translate import tone_for
from tests.fakes.twilio import DialBehaviour

ADMIN_TOKEN = "admin-token-for-gptt-tests-8c2d"

# -- the wire module (pure) -------------------------------------------------------------------


def test_the_url_names_the_origin_and_the_namespace() -> None:
    assert wire.parse_endpoint(wire.DEFAULT_URL) == wire.Endpoint(
        "https://api.gpttranslator.co", "/api/realtime-translator"
    )
    assert wire.parse_endpoint("http://127.0.0.1:5000/") == wire.Endpoint(
        "http://127.0.0.1:5000", wire.DEFAULT_NAMESPACE
    )
    endpoint = wire.parse_endpoint("https://staging.example/rt/")
    assert endpoint.namespace == "/rt"
    assert endpoint.connect_url("k&y") == "https://staging.example?apiKey=k%26y"
    assert wire.parse_endpoint("wss://api.gpttranslator.co") == wire.parse_endpoint(
        wire.DEFAULT_URL
    )
    for bad in ("ftp://x", "https://x/ns?apiKey=1", "api.gpttranslator.co"):
        with pytest.raises(ValueError):
            wire.parse_endpoint(bad)


def test_client_payloads_are_the_documented_shapes() -> None:
    assert wire.start_payload("es") == {"targetLanguage": "es"}
    pcm = np.arange(-5, 5, dtype="<i2").tobytes()
    chunk = wire.audio_chunk_payload(pcm)
    assert list(chunk) == ["audioData"] and base64.b64decode(chunk["audioData"]) == pcm
    with pytest.raises(ValueError):
        wire.audio_chunk_payload(b"\x01")  # half a sample


def test_server_events_parse_to_typed_events() -> None:
    pcm = np.array([1, -2, 300], dtype="<i2").tobytes()
    delta = base64.b64encode(pcm + b"\x07").decode()  # an odd trailing byte is dropped
    assert wire.parse_server_event("output_audio", {"delta": delta}) == wire.OutputAudio(pcm)
    assert wire.parse_server_event("output_transcript", {"delta": "Hola"}) == wire.Transcript(
        source=False, delta="Hola"
    )
    assert wire.parse_server_event("input_transcript", {"delta": "Hi"}) == wire.Transcript(
        source=True, delta="Hi"
    )
    assert wire.parse_server_event("ready_for_audio", None) == wire.Status("ready_for_audio")
    assert wire.parse_server_event("translation_error", {"message": "x"}) == (
        wire.TranslationError("x")
    )
    out = wire.parse_server_event("insufficient_tokens", {"message": "m", "remainingTokens": 0})
    assert out == wire.InsufficientTokens("m", 0)
    assert wire.parse_server_event("insufficient_tokens", None) == wire.InsufficientTokens("", None)
    assert wire.parse_server_event("something_new", {"x": 1}) is None
    for name, data in (
        ("output_audio", {"delta": "%%%"}),
        ("output_transcript", {}),
        ("output_audio", "x"),
    ):
        with pytest.raises(wire.WireError):
            wire.parse_server_event(name, data)


# -- settings -----------------------------------------------------------------------------------


def test_settings_need_the_key_and_take_another_url() -> None:
    with pytest.raises(ConfigError) as missing:
        settings_from_env({**BASE_ENV, "ENGINE": "gpt-translator"}, env_file=None)
    message = str(missing.value)
    assert message.startswith("GPT_TRANSLATOR_API_KEY:") and "\n" not in message
    with pytest.raises(ConfigError, match=r"^GPT_TRANSLATOR_URL:"):
        config_from_env({"GPT_TRANSLATOR_API_KEY": "k", "GPT_TRANSLATOR_URL": "ftp://x"})
    with pytest.raises(ConfigError) as keyed:
        config_from_env(
            {"GPT_TRANSLATOR_API_KEY": "k", "GPT_TRANSLATOR_URL": "https://h?apiKey=s3"}
        )
    assert "s3" not in str(keyed.value)
    config = config_from_env({"GPT_TRANSLATOR_API_KEY": " secret-7e1 "})
    assert config.api_key == "secret-7e1"
    assert config.endpoint == wire.parse_endpoint(wire.DEFAULT_URL)
    assert "secret-7e1" not in repr(config)


@pytest.mark.slow
def test_a_missing_key_stops_start_up_with_one_line(tmp_path: Path) -> None:
    env = {
        **BASE_ENV,
        "PATH": os.environ.get("PATH", ""),
        "ENGINE": "gpt-translator",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'calls.sqlite3'}",
    }
    result = run_gunicorn_once(env)
    assert result.returncode != 0
    assert result.stderr.strip().startswith(
        "configuration error: GPT_TRANSLATOR_API_KEY: required with ENGINE=gpt-translator"
    )
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


# -- one session against the stand-in ----------------------------------------------------------


class Heard(Recorder):
    """A :class:`Recorder` that notes when ``on_audio`` ran (for the latency figures)."""

    def on_audio(self, audio: Pcm16, received_at: float) -> None:
        super().on_audio(audio, time.monotonic())


@pytest.fixture(scope="module")
def server() -> Iterator[FakeGptTranslator]:
    with FakeGptTranslator() as running:
        yield running


@pytest.fixture(autouse=True)
def reset(server: FakeGptTranslator) -> Iterator[None]:
    yield
    server.balance = None
    server.ready_delay_s = 0.0
    server.refuse = False
    server.error_after_chunks = None


def open_session(
    server: FakeGptTranslator, language: str = "en", key: str = API_KEY
) -> tuple[GptTranslatorSession, Heard]:
    config = config_from_env({"GPT_TRANSLATOR_API_KEY": key, "GPT_TRANSLATOR_URL": server.url})
    heard = Heard()
    spec = SessionSpec(f"CA{uuid.uuid4().hex}", "caller_to_agent", language)
    session = GptTranslatorSession(config, Metrics(), spec=spec, listener=heard)
    session.start()
    return session, heard


def wait_ended(server: FakeGptTranslator, before: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(
        s.ended_cleanly or s.out_of_tokens for s in server.sessions[before:]
    ):
        time.sleep(0.05)


def test_audio_waits_for_ready_and_goes_in_100ms_chunks_of_24k_pcm16(
    server: FakeGptTranslator,
) -> None:
    server.ready_delay_s = 0.6  # the speaker talks while the session initialises
    before = len(server.sessions)
    session, heard = open_session(server)
    frames = [sine(SPEECH_HZ, FRAME, TWILIO_RATE_HZ, 8000.0, i * FRAME) for i in range(60)]
    start = time.monotonic()
    for i, frame in enumerate(frames):
        session.send_audio(Pcm16(frame, TWILIO_RATE_HZ))
        time.sleep(max(0.0, start + (i + 1) * 0.02 - time.monotonic()))
    session.close()
    session.join(10)
    (seen,) = server.sessions[before:]
    assert seen.violations == [] and server.violations == []
    assert seen.ended_cleanly
    # Everything said before ready_for_audio was held, then sent: 1.2 s, in 100 ms chunks
    # but the last, resampled by the bridge's own stateful 8 → 24 kHz resampler.
    assert all(n == CHUNK_SAMPLES * 2 for n in seen.chunk_bytes[:-1])
    assert 0 < seen.chunk_bytes[-1] <= CHUNK_SAMPLES * 2
    expected = Upsampler8kTo24k().process(np.concatenate(frames))
    assert bytes(seen.audio) == expected.astype("<i2").tobytes()
    assert not heard.failures


def test_output_deltas_reach_the_listener_in_order_with_both_transcripts(
    server: FakeGptTranslator,
) -> None:
    session, heard = open_session(server, "es")
    speak(session, 2.0)
    session.close()
    session.join(10)
    audio = np.concatenate([a.samples for a, _ in heard.audio])
    assert {a.rate_hz for a, _ in heard.audio} == {ENGINE_RATE_HZ}
    # The stand-in's tone runs on across deltas: any reordering would break the sine.
    reference = sine(tone_for("es"), len(audio), ENGINE_RATE_HZ, server.amplitude, 0)
    assert len(audio) >= ENGINE_RATE_HZ and np.array_equal(audio, reference)
    translation = "".join(t for k, t in heard.texts if k == "translation")
    assert translation.startswith("hola hola") and "speech" in "".join(
        t for k, t in heard.texts if k == "source"
    )


def test_a_translation_error_leaves_the_session_going(server: FakeGptTranslator) -> None:
    server.error_after_chunks = 3
    before = len(server.sessions)
    session, heard = open_session(server)
    speak(session, 1.5)
    session.close()
    session.join(10)
    (seen,) = server.sessions[before:]
    assert seen.ended_cleanly and seen.received_ms == pytest.approx(1500, abs=1)
    assert not heard.failures and len(heard.audio) >= 12


def test_after_a_drop_a_new_session_starts_and_gets_the_held_audio(
    server: FakeGptTranslator,
) -> None:
    before = len(server.sessions)
    session, heard = open_session(server, "es")
    speak(session, 0.6)
    server.drop_all()
    speak(session, 1.0)
    session.close()
    session.join(10)
    first, second = server.sessions[before:]
    assert not first.ended_cleanly and second.ended_cleanly
    assert (first.target_language, second.target_language) == ("es", "es")
    assert second.ready_at is not None and not second.violations
    assert first.received_ms + second.received_ms >= 1500
    assert not heard.failures


def test_a_bad_key_fails_the_session_unopened(server: FakeGptTranslator) -> None:
    refused = server.refused
    before = len(server.sessions)
    session, heard = open_session(server, key="not-the-key")
    try:
        speak(session, 0.2)
        heard.wait("on_failed", lambda: heard.failures)
    finally:
        session.close()
        session.join(5)
    ((reason, opened),) = heard.failures
    assert opened is False and not is_out_of_credit(reason)
    assert "not-the-key" not in reason
    assert server.refused == refused + 1 and len(server.sessions) == before


def test_no_tokens_at_start_is_out_of_credit_unopened(server: FakeGptTranslator) -> None:
    server.balance = 0
    session, heard = open_session(server)
    try:
        heard.wait("on_failed", lambda: heard.failures)
    finally:
        session.close()
        session.join(5)
    ((reason, opened),) = heard.failures
    assert is_out_of_credit(reason) and opened is False
    assert "limit of words" in reason


def test_running_out_mid_session_ends_it_without_retrying(server: FakeGptTranslator) -> None:
    server.balance = 40  # 0.8 s of audio at 50 tokens a second
    before = len(server.sessions)
    session, heard = open_session(server)
    try:
        speak(session, 1.5)
        heard.wait("on_failed", lambda: heard.failures)
        time.sleep(0.5)  # a retry would show up as a second session
    finally:
        session.close()
        session.join(5)
    ((reason, opened),) = heard.failures
    assert is_out_of_credit(reason) and opened is True
    (seen,) = server.sessions[before:]
    assert seen.out_of_tokens and heard.audio  # translated until the tokens ran out


def test_bridge_added_latency_delta_to_on_audio(server: FakeGptTranslator) -> None:
    """Time from the stand-in emitting ``output_audio`` to the listener's ``on_audio``
    (loopback, Socket.IO framing, base64 and the ordered dispatch included)."""
    before = len(server.sessions)
    session, heard = open_session(server)
    speak(session, 4.0)
    session.close()
    session.join(10)
    (seen,) = server.sessions[before:]
    sent = [at for at, _ in seen.deltas_sent]
    got = [at for _, at in heard.audio]
    assert len(sent) == len(got) >= 30
    delays_ms = sorted(1000 * (g - s) for s, g in zip(sent, got, strict=True))
    p50 = statistics.median(delays_ms)
    p95 = delays_ms[int(0.95 * (len(delays_ms) - 1))]
    n = len(delays_ms)
    print(f"\ngpt-translator delta → on_audio, {n} deltas: p50 {p50:.2f} p95 {p95:.2f} ms")
    assert p95 < 100


# -- a whole call -------------------------------------------------------------------------------


@pytest.mark.slow
def test_out_of_tokens_ends_the_call_politely(
    server: FakeGptTranslator, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {
        "ENGINE": "gpt-translator",
        "GPT_TRANSLATOR_API_KEY": API_KEY,
        "GPT_TRANSLATOR_URL": server.url,
        "ADMIN_TOKEN": ADMIN_TOKEN,
    }
    with bridge_stack(tmp_path_factory.mktemp("gptt-credit"), env, None) as stack:
        twilio, bridge = stack.twilio, stack.bridge
        twilio.default_dial = DialBehaviour(audio=ulaw_silence(8000 * 20))
        server.balance = 150  # both directions stream from the start: ~1.5 s each
        caller = twilio.place_call(
            ulaw_silence(4000) + tone_ulaw(10.0), from_=CALLER_NUMBER, to=BRIDGE_NUMBER
        )
        agent = agent_of(twilio, caller)
        assert caller.wait_ended(20) and agent.wait_ended(10)
        wait_call_over(bridge)
        assert caller.said[-1] == prompt("interpreter_unavailable", "es").text
        assert agent.said[-1] == prompt("interpreter_unavailable", "en").text
        assert bridge.metric("bridge_calls_ended_total", 'reason="engine_out_of_credit"') == 1
        record = requests.get(
            f"{bridge.url}/api/calls/{caller.sid}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=5,
        ).json()
        assert record["end_reason"] == "engine_out_of_credit"
        assert "token balance exhausted" in record["end_detail"]


# -- live -----------------------------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.skipif(
    not os.environ.get("GPT_TRANSLATOR_API_KEY") or os.environ.get("BRIDGE_LIVE_TESTS") != "1",
    reason="live test: set GPT_TRANSLATOR_API_KEY and BRIDGE_LIVE_TESTS=1",
)
def test_live_spanish_caller_is_translated_to_english() -> None:
    config = config_from_env(os.environ)
    heard = Heard()
    spec = SessionSpec("CA" + "0" * 32, "caller_to_agent", "en")
    session = GptTranslatorSession(config, Metrics(), spec=spec, listener=heard)
    session.start()
    speech = ulaw_to_pcm16(load_wav(CALLER_ES_8K_MULAW)[2])
    try:
        for i in range(0, len(speech.samples), FRAME):
            session.send_audio(Pcm16(speech.samples[i : i + FRAME], TWILIO_RATE_HZ))
            time.sleep(0.02)
        heard.wait("translated audio", lambda: heard.audio or heard.failures, timeout=30)
    finally:
        session.close()
        session.join(10)
    assert not heard.failures
    assert any(k == "translation" for k, _ in heard.texts)
