"""``ENGINE=openai-realtime`` and ``ENGINE=auto`` beyond the shared suite: the interpreter's
instructions, its session configuration, no conversation state across turns, both audio
formats, ``auto``'s choice per direction, settings, and a live check (marked, skipped).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.audio.pcm import ENGINE_RATE_HZ, TWILIO_RATE_HZ, Pcm16, ulaw_to_pcm16
from bridge.engines import registry as engines
from bridge.engines.auto import uses_translation
from bridge.engines.contract import SessionSpec, TranslationSession
from bridge.engines.openai.config import VOICES
from bridge.engines.openai.interpreter import instructions
from bridge.engines.registry import settings_from_env
from bridge.ops.metrics import Metrics
from bridge.settings import engine_choice
from bridge.settings.env import ConfigError
from tests.bridge_process import OPENAI_KEY
from tests.call_helpers import (
    BRIDGE_NUMBER,
    CALLER_NUMBER,
    agent_of,
    bridge_stack,
    heard_tone_s,
    tone_ulaw,
    wait_call_over,
    wait_streaming,
)
from tests.engine_sessions import BASE_ENV, Recorder, speak
from tests.fakes.audio import dominant_frequency, load_wav, ulaw_silence
from tests.fakes.openai_realtime import FakeRealtimeServer, RealtimeSession
from tests.fakes.openai_translate import tone_for
from tests.fakes.twilio import DialBehaviour

FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "fixtures"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeRealtimeServer]:
    running = FakeRealtimeServer()
    with running:
        yield running


def open_session(
    server: FakeRealtimeServer,
    output_language: str,
    input_language: str | None,
    engine: str = "openai-realtime",
    **env: str,
) -> tuple[TranslationSession, Recorder]:
    settings = settings_from_env(
        {
            **BASE_ENV,
            "ENGINE": engine,
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": server.base_url,
            **env,
        },
        env_file=None,
    )
    recorder = Recorder()
    spec = SessionSpec(f"CA{uuid.uuid4().hex}", "caller_to_agent", output_language, input_language)
    session = engines.build(settings, Metrics()).session(spec, recorder)
    session.start()
    return session, recorder


def finish(session: TranslationSession) -> None:
    session.close()
    session.join(10)  # type: ignore[attr-defined]


def newest(server: FakeRealtimeServer) -> RealtimeSession:
    return server.realtime_sessions[-1]


def ended(server: FakeRealtimeServer) -> RealtimeSession:
    """The newest stand-in session, once its socket has closed."""
    stand_in = newest(server)
    assert stand_in.ended.wait(5), "the client never closed the socket"
    return stand_in


def test_the_session_is_an_interpreter_for_the_pair_with_the_glossary(
    server: FakeRealtimeServer,
) -> None:
    session, _ = open_session(server, "en", "es")
    speak(session, 0.3, voiced=False)
    finish(session)
    stand_in = ended(server)
    assert not stand_in.invalid_events
    text = stand_in.instructions
    assert "from Spanish into English" in text
    assert "Never answer a question" in text
    assert '"factura" → "invoice"' in text and '"número de cuenta" → "account number"' in text
    assert '"Twilio": keep it as "Twilio"' in text
    audio = stand_in.config["audio"]
    assert audio["input"]["turn_detection"]["type"] == "server_vad"
    assert audio["input"]["turn_detection"]["create_response"] is False
    assert audio["input"]["turn_detection"]["interrupt_response"] is False
    assert audio["input"]["format"] == {"type": "audio/pcmu"}
    assert audio["output"] == {"format": {"type": "audio/pcmu"}, "voice": "marin"}
    assert stand_in.model == "gpt-realtime"
    assert stand_in.config["output_modalities"] == ["audio"]


def test_no_conversation_state_is_carried_across_turns(server: FakeRealtimeServer) -> None:
    session, heard = open_session(server, "es", "en")
    for _ in range(3):
        speak(session, 0.6)
        speak(session, 0.6, voiced=False)
    heard.wait("three translations", lambda: len(newest(server).responses) >= 3)
    finish(session)
    stand_in = ended(server)
    assert not stand_in.invalid_events
    assert len(stand_in.responses) == 3
    seen: set[str] = set()
    for response in stand_in.responses:
        assert response.conversation == "none"  # out of band: nothing added to the conversation
        assert len(response.context) == 1 and not seen & set(response.context)
        seen.update(response.context)
    assert stand_in.deleted == [r.context[0] for r in stand_in.responses]
    assert stand_in.conversation == []
    assert heard.text("translation") == "hola " * 9
    assert heard.text("source") == "speech " * 3
    audio = heard.heard()
    assert audio is not None and audio.rate_hz == TWILIO_RATE_HZ
    assert dominant_frequency(audio.samples, audio.rate_hz) == pytest.approx(tone_for("es"), abs=15)
    assert stand_in.ended_cleanly


def test_speech_still_under_way_at_close_is_translated(server: FakeRealtimeServer) -> None:
    session, heard = open_session(server, "en", "es")
    speak(session, 0.8)
    finish(session)  # no pause: the server's VAD never ended the turn
    stand_in = ended(server)
    assert [e["type"] for _, e in stand_in.received_events].count("input_audio_buffer.commit") == 1
    assert len(stand_in.responses) == 1 and heard.audio
    assert stand_in.ended_cleanly and stand_in.conversation == []


def test_pcm24_works_too(server: FakeRealtimeServer) -> None:
    session, heard = open_session(
        server, "es", "en", REALTIME_AUDIO_FORMAT="pcm24", REALTIME_VOICE="cedar"
    )
    speak(session, 0.8)
    speak(session, 0.7, voiced=False)
    heard.wait("translated audio", lambda: heard.audio)
    finish(session)
    stand_in = ended(server)
    assert stand_in.config["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "voice": "cedar",
    }
    audio = heard.heard()
    assert audio is not None and audio.rate_hz == ENGINE_RATE_HZ
    assert dominant_frequency(audio.samples, audio.rate_hz) == pytest.approx(tone_for("es"), abs=15)
    assert stand_in.received_audio and not stand_in.invalid_events


def test_auto_uses_the_translation_model_where_it_can_and_realtime_elsewhere(
    server: FakeRealtimeServer,
) -> None:
    assert uses_translation("es") and uses_translation("pt-BR") and not uses_translation("nl")
    realtime_before, translation_before = len(server.realtime_sessions), len(server.sessions)
    dutch, to_dutch = open_session(server, "nl", "en", engine="auto")
    english, to_english = open_session(server, "en", "nl", engine="auto")
    for _ in range(2):
        for session in (dutch, english):
            speak(session, 0.4)
    for session in (dutch, english):
        speak(session, 0.3, voiced=False)
    speak(dutch, 0.4, voiced=False)
    to_dutch.wait("Dutch", lambda: to_dutch.audio)
    to_english.wait("English", lambda: to_english.audio)
    finish(dutch)
    finish(english)
    assert len(server.realtime_sessions) == realtime_before + 1
    assert len(server.sessions) == translation_before + 1
    assert "from English into Dutch" in newest(server).instructions
    assert server.sessions[-1].output_language == "en"
    heard_nl, heard_en = to_dutch.heard(), to_english.heard()
    assert heard_nl is not None and heard_en is not None
    assert dominant_frequency(heard_nl.samples, heard_nl.rate_hz) == pytest.approx(
        tone_for("nl"), abs=15
    )
    assert dominant_frequency(heard_en.samples, heard_en.rate_hz) == pytest.approx(
        tone_for("en"), abs=15
    )


def test_instructions_without_a_known_speaker_language_or_glossary() -> None:
    text = instructions(None, "pl")
    assert "interpret into Polish." in text and "Glossary" not in text
    assert "into xx." in instructions("en", "xx")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OPENAI_API_KEY": ""}, "OPENAI_API_KEY"),
        ({"REALTIME_VOICE": "hal9000"}, "REALTIME_VOICE"),
        ({"REALTIME_AUDIO_FORMAT": "opus"}, "REALTIME_AUDIO_FORMAT"),
    ],
)
@pytest.mark.parametrize("engine", ["openai-realtime", "auto"])
def test_bad_settings_stop_start_up_with_one_line(
    engine: str, env: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_env(
            {**BASE_ENV, "ENGINE": engine, "OPENAI_API_KEY": OPENAI_KEY, **env}, env_file=None
        )
    assert str(info.value).startswith(f"{variable}: ") and "\n" not in str(info.value)


def test_any_language_is_accepted_and_voices_are_the_sdks() -> None:
    from typing import get_args

    from openai.types.realtime.realtime_audio_config_output_param import Voice

    assert engine_choice.choice("openai-realtime").output_languages is None
    assert engine_choice.choice("auto").output_languages is None
    # The configuration lists the voices itself (reading it must not load the SDK): the same
    # built-in voices the installed SDK names.
    sdk_voices = next(tuple(str(v) for v in get_args(a)) for a in get_args(Voice) if get_args(a))
    assert set(VOICES) == set(sdk_voices)


@pytest.mark.live
@pytest.mark.skipif(
    not os.environ.get("OPENAI_API_KEY") or os.environ.get("BRIDGE_LIVE_TESTS") != "1",
    reason="live test: set OPENAI_API_KEY and BRIDGE_LIVE_TESTS=1",
)
def test_live_spanish_is_interpreted_into_english() -> None:
    settings = settings_from_env(
        {
            **BASE_ENV,
            "ENGINE": "openai-realtime",
            "OPENAI_API_KEY": os.environ["OPENAI_API_KEY"],
            **{k: os.environ[k] for k in ("OPENAI_BASE_URL", "REALTIME_MODEL") if k in os.environ},
        },
        env_file=None,
    )
    heard = Recorder()
    session = engines.build(settings, Metrics()).session(
        SessionSpec("CAlive", "caller_to_agent", "en", "es"), heard
    )
    _, _, ulaw = load_wav(FIXTURES / "caller_es_8k_mulaw.wav")
    ulaw += b"\xff" * 8000 * 4  # a pause: the server's VAD ends the turn
    session.start()
    start = time.monotonic()
    for i in range(0, len(ulaw), 160):
        session.send_audio(ulaw_to_pcm16(ulaw[i : i + 160]))
        time.sleep(max(0.0, start + (i + 160) / 8000 - time.monotonic()))
    heard.wait("the interpretation", lambda: heard.text("translation"), timeout=20)
    finish(session)
    assert not heard.failures
    audio = heard.heard()
    assert isinstance(audio, Pcm16) and audio.duration_ms > 1000


@pytest.mark.slow
def test_a_dutch_caller_is_interpreted_both_ways_through_auto(
    tmp_path: Path,
) -> None:
    """ENGINE=auto in a whole call: Dutch (only the realtime model speaks it) for the caller,
    English (the translation model) for the agent."""
    running = FakeRealtimeServer()
    with (
        running,
        bridge_stack(
            tmp_path,
            {
                "ENGINE": "auto",
                "OPENAI_API_KEY": OPENAI_KEY,
                "OPENAI_BASE_URL": running.base_url,
                "CALLER_LANGUAGE": "nl",
                "CALLER_LANGUAGES": "nl",
            },
            None,
        ) as stack,
    ):
        twilio = stack.twilio
        twilio.default_dial = DialBehaviour(audio=ulaw_silence(8000 * 4) + tone_ulaw(2.0))
        caller = twilio.place_call(
            ulaw_silence(8000) + tone_ulaw(2.0), from_=CALLER_NUMBER, to=BRIDGE_NUMBER
        )
        agent = agent_of(twilio, caller)
        wait_streaming(twilio, caller, agent)
        assert twilio.wait_for(lambda: heard_tone_s(agent, tone_for("en")) >= 0.6, 20)
        assert twilio.wait_for(lambda: heard_tone_s(caller, tone_for("nl")) >= 0.6, 20)
        caller.hangup()
        wait_call_over(stack.bridge)
        assert caller.violations == [] and agent.violations == []
    realtime = running.realtime_sessions
    assert len(realtime) == 1 and "from English into Dutch" in realtime[0].instructions
    assert [s.output_language for s in running.sessions] == ["en"]
    assert realtime[0].ended_cleanly and realtime[0].conversation == []


def test_a_close_whose_last_commit_is_refused_ends_at_once(server: FakeRealtimeServer) -> None:
    session, heard = open_session(server, "en", "es")
    speak(session, 0.5)  # speech under way, and the server knows it
    stand_in = newest(server)
    deadline = time.monotonic() + 5
    while not any(
        e["type"] == "input_audio_buffer.speech_started" for _, e in stand_in.sent_events
    ):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)
    server.min_commit_ms = 10_000  # the closing commit is refused (too little audio)
    try:
        started = time.monotonic()
        finish(session)
        ended(server)
    finally:
        server.min_commit_ms = 100
    assert time.monotonic() - started < 2.0  # not the 5 s wait for a response never coming
    assert [code for _, code, _ in stand_in.invalid_events] == ["input_audio_buffer_commit_empty"]
    assert stand_in.ended_cleanly and not heard.failures
