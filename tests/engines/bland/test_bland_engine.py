"""Bland-specific behaviour of ``ENGINE=bland`` against its stand-in (tests/fakes/bland.py):
DELETE at the end, single-use ws_url, rotation before the session limit, the concurrency cap,
per-utterance output, languages, and start-up without a key. The behaviour every engine shares is in
tests/engines/test_engines.py; a live check against Bland is at the end (skipped without a key).
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from bridge.audio.pcm import Pcm16, ulaw_to_pcm16
from bridge.engines.bland.engine import BlandEngine
from bridge.engines.bland.session import BlandTranslationSession
from bridge.engines.contract import Direction, SessionSpec
from bridge.engines.registry import settings_from_env
from bridge.ops.metrics import Metrics
from bridge.settings.env import ConfigError
from tests.engine_sessions import BASE_ENV, Recorder, speak
from tests.engine_standins import BLAND_KEY
from tests.fakes.audio import load_wav
from tests.fakes.bland import FakeBland
from tests.fakes.openai_translate import tone_for

pytestmark = pytest.mark.slow
FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "fixtures"


@pytest.fixture
def bland() -> Iterator[FakeBland]:
    with FakeBland(api_key=BLAND_KEY) as server:
        yield server
        assert server.violations == []


def engine_for(server: FakeBland | None, **env: str) -> tuple[BlandEngine, Metrics]:
    base = {"ENGINE": "bland", "BLAND_API_KEY": BLAND_KEY}
    if server is not None:
        base["BLAND_BASE_URL"] = server.base_url
    settings = settings_from_env({**BASE_ENV, **base, **env}, env_file=None)
    metrics = Metrics()
    return BlandEngine(settings, metrics), metrics


def open_session(
    engine: BlandEngine,
    language: str = "en",
    direction: Direction = "caller_to_agent",
    call_sid: str | None = None,
) -> tuple[BlandTranslationSession, Recorder]:
    recorder = Recorder()
    spec = SessionSpec(call_sid or f"CA{uuid.uuid4().hex}", direction, language)
    session = engine.session(spec, recorder)
    assert isinstance(session, BlandTranslationSession)
    session.start()
    return session, recorder


def count(metrics: Metrics, event: str) -> float:
    return float(metrics.engine_sessions.labels(event)._value.get())


def wait_until(what: str, ready: object, timeout: float = 10.0) -> None:
    assert callable(ready)
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_missing_key_stops_start_up_with_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_env({**BASE_ENV, "ENGINE": "bland"}, env_file=None)
    assert str(info.value).startswith("BLAND_API_KEY: required with ENGINE=bland")
    assert "\n" not in str(info.value)


def test_a_bad_base_url_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^BLAND_BASE_URL: "):
        engine_for(None, BLAND_BASE_URL="ftp://bland.example")


@pytest.mark.parametrize("answer_delay_s", [0.0, 1.5])
def test_the_session_is_ended_with_delete_after_its_last_utterance(
    bland: FakeBland, answer_delay_s: float
) -> None:
    bland.answer_delay_s = answer_delay_s  # Bland still translating when the call ends
    engine, _ = engine_for(bland, BLAND_VOICE_ID="0f0e0d0c-0000-4000-8000-000000000001")
    session, heard = open_session(engine)
    speak(session, 0.8)
    session.close()  # mid-utterance: the stop flushes it and its answer still arrives
    session.join(10)
    [stand_in] = bland.sessions
    assert stand_in.deleted and stand_in.status == "ENDED"
    assert stand_in.end_reason == "api_terminated:call_ended"
    assert stand_in.stop_received
    assert stand_in.body["audio_protocol"] == "twilio_ulaw" and "sample_rate" not in stand_in.body
    assert stand_in.body["voice_id"] == "0f0e0d0c-0000-4000-8000-000000000001"
    assert heard.text("translation") and heard.heard() is not None and not heard.failures


def test_languages_come_from_the_other_direction_of_the_call(bland: FakeBland) -> None:
    engine, _ = engine_for(bland)
    call_sid = f"CA{uuid.uuid4().hex}"
    to_agent, _ = open_session(engine, "de", "caller_to_agent", call_sid)
    to_caller, _ = open_session(engine, "fr", "agent_to_caller", call_sid)
    wait_until("both sessions", lambda: len(bland.sessions) == 2)
    to_agent.close()
    to_caller.close()
    pairs = {(s.source_language, s.target_language) for s in bland.sessions}
    assert pairs == {("fr", "de"), ("de", "fr")}


def test_a_ws_url_is_single_use_so_a_drop_creates_a_new_session(bland: FakeBland) -> None:
    engine, metrics = engine_for(bland)
    session, heard = open_session(engine)
    try:
        speak(session, 0.6)
        speak(session, 0.4, voiced=False)
        heard.wait("first translation", lambda: heard.audio)
        first = bland.sessions[0]
        bland.drop_all()
        speak(session, 0.6)
        speak(session, 0.4, voiced=False)
        wait_until("a second session", lambda: len(bland.sessions) == 2)
    finally:
        session.close()
        session.join(10)
    second = bland.sessions[1]
    assert second.token != first.token and second.session_id != first.session_id
    assert first.deleted and second.deleted  # the dropped one is DELETEd too (a no-op at Bland)
    assert count(metrics, "replaced") == 1 and not heard.failures
    # The stand-in refuses a ws_url's second use, as Bland does.
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{bland_ws_port(bland)}/ws/translate/{first.token}")
    assert refused.value.response.status_code == 403
    bland.violations.remove("ws_url used more than once")


def bland_ws_port(server: FakeBland) -> int:
    assert server._ws is not None
    return int(server._ws.socket.getsockname()[1])


@pytest.mark.parametrize("spare_slot", [True, False], ids=["make-before-break", "no-spare-slot"])
def test_rotation_before_the_limit_loses_no_input(bland: FakeBland, spare_slot: bool) -> None:
    bland.max_duration_s = 8.0  # Bland's 30 minutes, shortened
    bland.answer_delay_s = 0.5  # the old session still owes an answer when the switch comes
    engine, metrics = engine_for(bland, BLAND_MAX_SESSIONS="2" if spare_slot else "1")
    session, heard = open_session(engine)
    for _ in range(6):  # 9.6 s: sentences with pauses, so there are quiet moments to switch in
        speak(session, 0.8)
        speak(session, 0.8, voiced=False)
    session.close()
    session.join(15)
    sessions = bland.sessions
    assert len(sessions) >= 2 and count(metrics, "rotated") >= 1
    assert all(s.end_reason != "max_duration_reached" for s in sessions)
    assert all(s.deleted for s in sessions)
    # Every millisecond said went to exactly one Bland session.
    assert sum(s.received_ms for s in sessions) == pytest.approx(9600, abs=60)
    assert sum(len(s.utterances) for s in sessions) == 6 and not heard.failures
    assert heard.text("translation") == "hello " * 24  # every answer heard, none cut off


def test_the_process_cap_fails_a_session_unopened_without_calling_bland(bland: FakeBland) -> None:
    engine, _ = engine_for(bland, BLAND_MAX_SESSIONS="2")
    first, _ = open_session(engine)
    second, _ = open_session(engine)
    wait_until("two sessions", lambda: len(bland.sessions) == 2)
    third, heard = open_session(engine)
    try:
        heard.wait("on_failed", lambda: heard.failures, timeout=10)
    finally:
        for s in (first, second, third):
            s.close()
    assert heard.failures == [("Bland concurrency cap reached (BLAND_MAX_SESSIONS=2)", False)]
    assert len(bland.sessions) == 2
    for s in (first, second):
        s.join(10)
    fourth, heard4 = open_session(engine)  # the slots came back with the DELETEs
    wait_until("a third Bland session", lambda: len(bland.sessions) == 3)
    fourth.close()
    fourth.join(10)
    assert not heard4.failures


def test_blands_own_cap_refusal_fails_the_session_unopened(bland: FakeBland) -> None:
    bland.cap = 1  # another process (or a leaked pending session) holds the organisation's slots
    engine, _ = engine_for(bland)
    first, _ = open_session(engine)
    wait_until("one session", lambda: len(bland.sessions) == 1)
    second, heard = open_session(engine)
    try:
        heard.wait("on_failed", lambda: heard.failures, timeout=10)
    finally:
        first.close()
        second.close()
    [(reason, opened)] = heard.failures
    assert not opened and "HTTP 429" in reason and "TAAS_CONCURRENCY_LIMIT" in reason


def test_output_arrives_per_utterance_as_it_comes(bland: FakeBland) -> None:
    engine, _ = engine_for(bland)
    session, heard = open_session(engine, "es")
    try:
        speak(session, 0.6)
        speak(session, 0.5, voiced=False)
        heard.wait("the first utterance's translation", lambda: heard.audio, timeout=5)
        first_words = heard.text("translation")
        after_first = len(heard.audio)
        speak(session, 1.0)
        speak(session, 0.5, voiced=False)
        heard.wait("the second", lambda: len(heard.audio) > after_first, timeout=5)
    finally:
        session.close()
        session.join(10)
    assert first_words == "hola hola hola "  # one whole utterance, then the next
    assert heard.text("translation") == first_words + "hola " * 5
    assert heard.text("source") == "speech " * 8
    audio = heard.heard()
    assert audio is not None and audio.rate_hz == 8000  # μ-law decoded, no resampling
    assert audio.duration_ms == pytest.approx(1600, abs=40)
    assert not heard.failures
    assert tone_for("es") == 660.0


def test_delete_of_an_ended_session_is_a_no_op(bland: FakeBland) -> None:
    engine, _ = engine_for(bland)
    session, _ = open_session(engine)
    speak(session, 0.2, voiced=False)
    session.close()
    session.join(10)
    [stand_in] = bland.sessions
    request = urllib.request.Request(
        f"{bland.base_url}/v1/translation/sessions/{stand_in.session_id}",
        method="DELETE",
        headers={"Authorization": BLAND_KEY},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    assert stand_in.end_reason == "api_terminated:call_ended"
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(
            urllib.request.Request(
                f"{bland.base_url}/v1/translation/sessions/nope",
                headers={"Authorization": BLAND_KEY},
            ),
            timeout=5,
        )
    assert missing.value.code == 404


@pytest.mark.live
@pytest.mark.skipif(
    not os.environ.get("BLAND_API_KEY") or os.environ.get("BRIDGE_LIVE_TESTS") != "1",
    reason="live test: set BLAND_API_KEY and BRIDGE_LIVE_TESTS=1",
)
def test_live_spanish_caller_is_translated_to_english() -> None:
    env = {k: os.environ[k] for k in ("BLAND_API_KEY", "BLAND_BASE_URL") if k in os.environ}
    settings = settings_from_env({**BASE_ENV, "ENGINE": "bland", **env}, env_file=None)
    heard = Recorder()
    session = BlandEngine(settings, Metrics()).session(
        SessionSpec("CAlive", "caller_to_agent", "en"), heard
    )
    _, _, ulaw = load_wav(FIXTURES / "caller_es_8k_mulaw.wav")
    ulaw += b"\xff" * 8000 * 4  # keep sending silence while the translation finishes
    session.start()
    start = time.monotonic()
    for i in range(0, len(ulaw), 160):
        session.send_audio(ulaw_to_pcm16(ulaw[i : i + 160]))
        time.sleep(max(0.0, start + (i + 160) / 8000 - time.monotonic()))
    session.close()
    assert isinstance(session, BlandTranslationSession)
    session.join(15)
    assert not heard.failures
    audio = heard.heard()
    assert isinstance(audio, Pcm16) and audio.duration_ms > 1000
    assert heard.text("translation").strip()
