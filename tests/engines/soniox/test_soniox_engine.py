"""``ENGINE=soniox`` beyond the shared suite: the wire protocol, chunking, settings, speaking
each chunk the moment it is final, text-to-speech faults and refusals.

The shared behaviour (translated audio, silence, close, every millisecond, refusal, drops) is in
tests/engines/test_engines.py; a whole call in tests/engines/test_engine_calls.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.audio.pcm import TWILIO_RATE_HZ, Pcm16, ulaw_to_pcm16
from bridge.engines import registry as engines
from bridge.engines.contract import SessionSpec
from bridge.engines.registry import settings_from_env
from bridge.engines.soniox.config import config_from_env
from bridge.engines.soniox.engine import (
    SonioxTranslationSession,
    load_terms,
    speaker_languages,
)
from bridge.engines.soniox.wire import (
    ChunkAssembler,
    StartRequest,
    Token,
    TranslationTerm,
    parse_response,
)
from bridge.ops.metrics import Metrics
from bridge.settings import engine_choice
from bridge.settings.env import ConfigError
from tests.bridge_process import run_gunicorn_once
from tests.engine_sessions import BASE_ENV, Recorder, speak
from tests.engine_standins import SonioxHarness, soniox, soniox_tts
from tests.fakes.audio import CALLER_ES_8K_MULAW, load_wav

# -- the wire, pure -------------------------------------------------------------------------


def test_start_request_asks_for_one_way_translation_with_endpoints_and_terms() -> None:
    request = StartRequest(
        model="stt-rt-v5",
        target_language="en",
        language_hints=("es", "en"),
        terms=(TranslationTerm("factura", "invoice"), TranslationTerm("Twilio", "Twilio")),
        client_reference_id="CA1:caller_to_agent",
    )
    sent = json.loads(request.to_json())
    assert sent == {
        "model": "stt-rt-v5",
        "audio_format": "pcm_s16le",
        "sample_rate": 8000,
        "num_channels": 1,
        "enable_endpoint_detection": True,
        "max_endpoint_delay_ms": 1000,
        "translation": {"type": "one_way", "target_language": "en"},
        "language_hints": ["es", "en"],
        "context": {
            "translation_terms": [
                {"source": "factura", "target": "invoice"},
                {"source": "Twilio", "target": "Twilio"},
            ]
        },
        "client_reference_id": "CA1:caller_to_agent",
    }
    assert "api_key" not in sent  # the key goes with the connection (deprecated here)


def test_responses_parse_tokens_errors_and_finished() -> None:
    response = parse_response(
        '{"tokens": [{"text": "Hola", "is_final": true, "translation_status": "original",'
        ' "language": "es", "start_ms": 0, "end_ms": 300},'
        ' {"text": "Hello", "is_final": true, "translation_status": "translation",'
        ' "language": "en", "source_language": "es"},'
        ' {"text": "<end>", "is_final": true}],'
        ' "final_audio_proc_ms": 300, "total_audio_proc_ms": 500}'
    )
    assert [t.text for t in response.tokens] == ["Hola", "Hello", "<end>"]
    assert response.tokens[1].translation_status == "translation"
    assert response.tokens[2].is_endpoint and not response.finished
    assert parse_response('{"tokens": [], "finished": true}').finished
    error = parse_response('{"error_code": 401, "error_message": "Invalid API key."}').error
    assert error is not None and error.is_refusal and "Invalid API key." in str(error)
    busy = parse_response('{"error_code": 503, "error_message": "Cannot continue request"}')
    assert busy.error is not None and not busy.error.is_refusal


def tokens(*items: tuple[str, str | None, bool]) -> list[Token]:
    return [Token(text, final, status) for text, status, final in items]  # type: ignore[arg-type]


def test_chunks_are_ready_at_endpoints_sentence_ends_and_after_waiting() -> None:
    chunks = ChunkAssembler(max_wait_s=0.8)
    source, text, ready = chunks.feed(
        tokens(
            ("Hola", "original", True),
            ("Hel", "translation", False),  # provisional: never kept
            ("Hello", "translation", True),
        ),
        now=0.0,
    )
    assert (source, text, ready) == ("Hola", "Hello", [])
    assert chunks.feed(tokens(("<end>", None, True)), now=0.1)[2] == ["Hello"]
    # A sentence end makes a chunk at once, endpoint or not.
    assert chunks.feed(tokens((" Yes.", "translation", True)), now=0.2)[2] == ["Yes."]
    # Translation arriving after its utterance's <end> is ready with the response it came in.
    chunks.feed(tokens(("<end>", None, True)), now=0.3)
    assert chunks.feed(tokens((" late", "translation", True)), now=0.4)[2] == ["late"]
    # Without either, the chunk waits at most max_wait_s.
    chunks.feed(tokens(("long", "translation", True)), now=1.0)
    assert chunks.due(1.5) == []
    assert chunks.due(1.8) == ["long"]


def test_glossary_terms_follow_the_direction(tmp_path: Path) -> None:
    glossary = tmp_path / "glossary.json"
    glossary.write_text(
        json.dumps({"terms": [{"keep": "Twilio"}, {"en": "invoice", "es": "factura"}]})
    )
    assert load_terms(glossary, "es", "en") == (
        TranslationTerm("Twilio", "Twilio"),
        TranslationTerm("factura", "invoice"),
    )
    assert load_terms(glossary, "en", "fr") == (TranslationTerm("Twilio", "Twilio"),)
    assert load_terms(tmp_path / "absent.json", "es", "en") == ()


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("missing", "variable"), [("SONIOX_API_KEY", "SONIOX_API_KEY"), ("OPENAI_API_KEY", "OPENAI")]
)
def test_a_missing_key_is_named_in_one_line(missing: str, variable: str) -> None:
    env = {"SONIOX_API_KEY": "k", "OPENAI_API_KEY": "sk", missing: " "}
    with pytest.raises(ConfigError) as raised:
        config_from_env(env)
    assert str(raised.value).startswith(variable) and "\n" not in str(raised.value)


def test_sonioxs_own_tts_needs_no_openai_key() -> None:
    config = config_from_env({"SONIOX_API_KEY": "k", "SONIOX_TTS": "soniox"})
    assert (config.tts, config.tts_model, config.tts_voice) == ("soniox", "tts-rt-v1", "Adrian")
    with pytest.raises(ConfigError, match=r"^SONIOX_TTS: 'espeak' is not openai or soniox$"):
        config_from_env({"SONIOX_API_KEY": "k", "SONIOX_TTS": "espeak"})


def test_start_up_stops_with_one_line_without_the_soniox_key() -> None:
    env = {
        "PATH": str(Path(sys.executable).parent),
        "HOME": "/tmp",
        **BASE_ENV,
        "ENGINE": "soniox",
        "OPENAI_API_KEY": "sk-test",
    }
    proc = run_gunicorn_once(env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "configuration error: SONIOX_API_KEY: required with ENGINE=soniox"
    )


def test_every_language_a_speaker_may_choose_is_hinted() -> None:
    env = {
        **BASE_ENV,
        "ENGINE": "soniox",
        "SONIOX_API_KEY": "k",
        "OPENAI_API_KEY": "sk",
        "CALLER_LANGUAGES": "es,fr",
        "AGENT_LANGUAGES": "+15551230000=de",
    }
    settings = settings_from_env(env, env_file=None)
    caller = SessionSpec("CA1", "caller_to_agent", "en")
    agent = SessionSpec("CA1", "agent_to_caller", "es")
    assert speaker_languages(caller, settings) == ("es", "fr")
    assert speaker_languages(agent, settings) == ("en", "de")


def test_every_language_of_the_bridge_can_be_spoken() -> None:
    offered = {"de", "en", "es", "fr", "hi", "id", "it", "ja", "ko", "pt", "ru", "vi", "zh"}
    allowed = engine_choice.choice("soniox").output_languages
    assert allowed is not None and offered <= allowed


# -- against the stand-ins ------------------------------------------------------------------


@pytest.fixture(scope="module")
def harness() -> Iterator[SonioxHarness]:
    with soniox() as running:
        assert isinstance(running, SonioxHarness)
        yield running


def open_session(
    harness: SonioxHarness, metrics: Metrics | None = None, **env: str
) -> tuple[SonioxTranslationSession, Recorder]:
    settings = settings_from_env({**BASE_ENV, **harness.env(), **env}, env_file=None)
    engine = engines.build(settings, metrics or Metrics())
    recorder = Recorder()
    session = engine.session(
        SessionSpec(f"CA{uuid.uuid4().hex}", "caller_to_agent", "en"), recorder
    )
    assert isinstance(session, SonioxTranslationSession)
    session.start()
    return session, recorder


@pytest.mark.slow
def test_the_start_request_carries_the_key_terms_and_endpoint_detection(
    harness: SonioxHarness, tmp_path: Path
) -> None:
    glossary = tmp_path / "glossary.json"
    glossary.write_text(json.dumps({"terms": [{"en": "invoice", "es": "factura"}]}))
    before = len(harness.soniox.snapshot())
    session, heard = open_session(harness, GLOSSARY_FILE=str(glossary))
    speak(session, 0.2, voiced=False)
    session.close()
    session.join(10)
    request = harness.soniox.snapshot()[before]
    assert request.headers["Authorization"] == f"Bearer {harness.env()['SONIOX_API_KEY']}"
    assert request.start is not None and "api_key" not in request.start
    assert request.start["translation"] == {"type": "one_way", "target_language": "en"}
    assert request.start["enable_endpoint_detection"] is True
    assert request.start["language_hints"] == ["es", "en"]  # CALLER_LANGUAGE speaks to the agent
    assert request.start["context"]["translation_terms"] == [
        {"source": "factura", "target": "invoice"}
    ]
    assert request.ended_cleanly and not heard.failures


@pytest.mark.slow
def test_a_chunk_is_spoken_as_soon_as_it_is_final(harness: SonioxHarness) -> None:
    """The first utterance is heard while the speaker is still saying the second."""
    before_speech = len(harness.speech.snapshot())
    session, heard = open_session(harness)
    try:
        speak(session, 1.0)
        speak(session, 0.4, voiced=False)  # 300 ms of it is the stand-in's endpoint
        second_started = time.monotonic()
        speak(session, 2.0)
        second_ended = time.monotonic()
        speak(session, 0.4, voiced=False)
        heard.wait(
            "both chunks", lambda: len(heard.audio) >= 2 and len(session.speaker.timings) >= 2
        )
    finally:
        session.close()
        session.join(10)
    first_audio_at = heard.audio[0][1]
    assert first_audio_at < second_started + 0.5 < second_ended
    # Added by the bridge: the endpoint's response -> speech requested -> first audio heard.
    timing = session.speaker.timings[0]
    request = harness.speech.snapshot()[before_speech]
    assert set(request.body["input"].split()) == {"hello"}  # the stand-in's English
    assert request.body["response_format"] == "pcm" and request.body["model"] == "gpt-4o-mini-tts"
    assert timing.requested_at - timing.final_at < 0.05
    assert timing.first_audio_at - timing.final_at < 0.5
    assert heard.text("source").startswith("speech speech")
    assert not heard.failures


def three_failed_chunks(harness: SonioxHarness) -> tuple[str, bool, float | None]:
    """Three utterances whose speech fails: the failure reported and the chunks counted."""
    metrics = Metrics()
    session, heard = open_session(harness, metrics)
    for _ in range(3):
        speak(session, 0.4)
        speak(session, 0.4, voiced=False)
    heard.wait("on_failed", lambda: heard.failures, timeout=20)
    session.close()
    session.join(10)
    assert heard.text("translation")  # the words were still transcribed
    assert heard.heard() is None
    reason, opened = heard.failures[0]
    counted = metrics.registry.get_sample_value(
        "bridge_engine_sessions_total", {"event": "tts_failed"}
    )
    return reason, opened, counted


@pytest.mark.slow
def test_text_to_speech_failures_are_counted_then_end_the_session(harness: SonioxHarness) -> None:
    harness.speech.fail_status = 500
    try:
        reason, opened, counted = three_failed_chunks(harness)
    finally:
        harness.speech.fail_status = None
    assert opened is True and "HTTP 500" in reason and "text-to-speech" in reason
    assert counted == 3


@pytest.mark.slow
def test_a_bad_key_fails_unopened_with_sonioxs_message(harness: SonioxHarness) -> None:
    with harness.refusing():
        session, heard = open_session(harness)
        try:
            speak(session, 0.3)
            heard.wait("on_failed", lambda: heard.failures)
        finally:
            session.close()
            session.join(10)
    reason, opened = heard.failures[0]
    assert opened is False
    assert reason == "Soniox refused the request: Soniox error 401: Invalid API key."


def speak_utterances(session: SonioxTranslationSession, heard: Recorder, count: int) -> None:
    """``count`` utterances (0.6 s of speech, 0.4 s of silence), then every chunk spoken."""
    try:
        for _ in range(count):
            speak(session, 0.6)
            speak(session, 0.4, voiced=False)
        heard.wait("every chunk", lambda: len(session.speaker.timings) >= count)
    finally:
        session.close()
        session.join(10)


@pytest.mark.slow
def test_bridge_added_latency_per_chunk(harness: SonioxHarness) -> None:
    """The README's figures: for each utterance, Soniox's endpoint response leaving the
    stand-in -> the chunk handed to the speaker -> the speech request arriving -> the first
    audio at the listener (loopback both ways included; the stand-ins add no delay)."""
    before_text = len(harness.soniox.snapshot())
    before_speech = len(harness.speech.snapshot())
    session, heard = open_session(harness)
    utterances = 8
    speak_utterances(session, heard, utterances)
    ends = [
        at
        for request in harness.soniox.snapshot()[before_text:]
        for at, response in request.responses
        if any(t.get("text") == "<end>" for t in response.get("tokens", []))
    ][:utterances]
    requests = harness.speech.snapshot()[before_speech:][:utterances]
    timings = session.speaker.timings[:utterances]
    rows = {
        "endpoint sent -> chunk final": [
            t.final_at - e for t, e in zip(timings, ends, strict=True)
        ],
        "chunk final -> speech request in": [
            r.received_at - t.final_at for t, r in zip(timings, requests, strict=True)
        ],
        "speech request in -> first byte out": [
            (r.first_byte_at or r.received_at) - r.received_at for r in requests
        ],
        "chunk final -> first audio at listener": [t.first_audio_at - t.final_at for t in timings],
    }
    for name, values in rows.items():
        ms = sorted(1000 * v for v in values)
        print(f"{name}: p50 {ms[len(ms) // 2]:.1f} ms, max {ms[-1]:.1f} ms")
    assert max(rows["chunk final -> first audio at listener"]) < 0.5
    assert not heard.failures


@pytest.fixture(scope="module")
def harness_tts() -> Iterator[SonioxHarness]:
    with soniox_tts() as running:
        assert isinstance(running, SonioxHarness)
        yield running


@pytest.mark.slow
def test_sonioxs_own_tts_speaks_at_8khz_on_one_socket(harness_tts: SonioxHarness) -> None:
    before = len(harness_tts.tts.snapshot())
    session, heard = open_session(harness_tts)
    try:
        for _ in range(2):
            speak(session, 0.6)
            speak(session, 0.4, voiced=False)
        heard.wait("two chunks", lambda: len(session.speaker.timings) >= 2)
    finally:
        session.close()
        session.join(10)
    assert {audio.rate_hz for audio, _ in heard.audio} == {8000}  # no resampling at the leg
    (conn,) = harness_tts.tts.snapshot()[before:]  # one connection, a stream per chunk
    assert conn.headers["Authorization"] == f"Bearer {harness_tts.env()['SONIOX_API_KEY']}"
    assert len(conn.configs) >= 2 and len({c["stream_id"] for c in conn.configs}) == len(
        conn.configs
    )
    config = conn.configs[0]
    assert "api_key" not in config
    assert (config["language"], config["audio_format"], config["sample_rate"]) == (
        "en",
        "pcm_s16le",
        8000,
    )
    assert (config["model"], config["voice"]) == ("tts-rt-v1", "Adrian")
    assert not heard.failures


@pytest.mark.slow
def test_bridge_added_latency_with_sonioxs_tts(harness_tts: SonioxHarness) -> None:
    """As above, with Soniox speaking: chunk final -> first audio at the listener."""
    session, heard = open_session(harness_tts)
    utterances = 8
    speak_utterances(session, heard, utterances)
    ms = sorted(1000 * (t.first_audio_at - t.final_at) for t in session.speaker.timings)
    print(f"soniox tts: chunk final -> first audio p50 {ms[len(ms) // 2]:.1f} ms, max {ms[-1]:.1f}")
    assert ms[-1] < 500


@pytest.mark.slow
def test_sonioxs_tts_stream_errors_are_counted_then_end_the_session(
    harness_tts: SonioxHarness,
) -> None:
    harness_tts.tts.fail_streams = True
    try:
        reason, opened, counted = three_failed_chunks(harness_tts)
    finally:
        harness_tts.tts.fail_streams = False
    assert opened is True and "Soniox TTS error 500: Synthesis failed." in reason
    assert counted == 3


# -- live -----------------------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.skipif(
    not os.environ.get("SONIOX_API_KEY")
    or not (os.environ.get("OPENAI_API_KEY") or os.environ.get("SONIOX_TTS") == "soniox"),
    reason="needs SONIOX_API_KEY, and OPENAI_API_KEY unless SONIOX_TTS=soniox (spends money)",
)
def test_live_spanish_speech_is_translated_and_spoken_in_english() -> None:
    names = ("SONIOX_API_KEY", "OPENAI_API_KEY", "SONIOX_TTS", "SONIOX_MODEL", "TTS_MODEL")
    env = {**BASE_ENV, "ENGINE": "soniox", **{k: os.environ[k] for k in names if k in os.environ}}
    settings = settings_from_env(env, env_file=None)
    recorder = Recorder()
    session = engines.build(settings, Metrics()).session(
        SessionSpec("CAlive", "caller_to_agent", "en"), recorder
    )
    session.start()
    _, _, ulaw = load_wav(CALLER_ES_8K_MULAW)
    speech = ulaw_to_pcm16(ulaw).samples
    frame = TWILIO_RATE_HZ // 50
    try:
        for start in range(0, len(speech), frame):
            session.send_audio(Pcm16(speech[start : start + frame], TWILIO_RATE_HZ))
            time.sleep(0.02)
        speak(session, 2.0, voiced=False)  # let the endpoint come
        recorder.wait("spoken translation", lambda: recorder.audio, timeout=30)
    finally:
        session.close()
    assert recorder.text("translation") and recorder.text("source")
    assert not recorder.failures
