"""The shared engine suite: every translation engine, against its vendor's stand-in, the same way.

Each test opens sessions the way the bridge does (``bridge.engines.build`` from settings, one
:class:`SessionSpec` per direction), feeds the speaker's 8 kHz audio at real-time pace and
checks what the listener gets. Vendor-specific behaviour (session limits, billing events) has
its own module per engine.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from bridge.engines import registry as engines
from bridge.engines import upstream
from bridge.engines.bland import session as bland_session
from bridge.engines.contract import Direction, SessionSpec, TranslationSession
from bridge.engines.gpt_translator import engine as gpt_translator_engine
from bridge.engines.registry import settings_from_env
from bridge.engines.soniox import engine as soniox_engine
from bridge.ops.metrics import Metrics
from tests.engine_harness import ConfigFault, EngineHarness
from tests.engine_sessions import BASE_ENV, Recorder, speak
from tests.engine_standins import HARNESSES
from tests.fakes.audio import dominant_frequency
from tests.fakes.openai_translate import tone_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest) -> Iterator[EngineHarness]:
    with HARNESSES[request.param]() as running:
        yield running


def open_session(
    harness: EngineHarness, output_language: str = "en", direction: Direction = "caller_to_agent"
) -> tuple[TranslationSession, Recorder]:
    settings = settings_from_env({**BASE_ENV, **harness.env()}, env_file=None)
    engine = engines.build(settings, Metrics())
    recorder = Recorder()
    spec = SessionSpec(f"CA{uuid.uuid4().hex}", direction, output_language)
    session = engine.session(spec, recorder)
    session.start()
    return session, recorder


def keep_line_open(
    session: TranslationSession, what: str, ready: Callable[[], object], timeout: float = 15.0
) -> None:
    """Send silence, as a phone line does, until ``ready()``: turn-based engines (the realtime
    voice model's server VAD) answer only once they have heard enough of it, however the
    machine's load spreads the audio out."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        speak(session, 0.1, voiced=False)


def stand_in_received_ms(harness: EngineHarness, before: int) -> float:
    return sum(s.received_ms for s in harness.sessions()[before:])


@pytest.mark.parametrize("language", ["en", "es"])
def test_speech_becomes_translated_audio_and_text(harness: EngineHarness, language: str) -> None:
    session, heard = open_session(harness, language)
    try:
        speak(session, 1.5)
        speak(session, 0.5, voiced=False)
        keep_line_open(session, "translated audio", lambda: heard.audio)
        keep_line_open(
            session,
            "source and translated text",
            lambda: heard.text("source") and heard.text("translation"),
        )
    finally:
        session.close()
    audio = heard.heard()
    assert audio is not None and audio.duration_ms >= 200
    assert dominant_frequency(audio.samples, audio.rate_hz) == pytest.approx(
        tone_for(language), abs=15
    )
    assert not heard.failures


def test_silence_is_not_translated(harness: EngineHarness) -> None:
    session, heard = open_session(harness)
    try:
        speak(session, 1.0, voiced=False)
        time.sleep(0.5)
    finally:
        session.close()
    assert heard.heard() is None and not heard.failures


def test_close_is_idempotent_and_ends_the_vendor_session(harness: EngineHarness) -> None:
    before = len(harness.sessions())
    session, heard = open_session(harness)
    speak(session, 0.5)
    session.close()
    session.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(
        s.ended_cleanly for s in harness.sessions()[before:]
    ):
        time.sleep(0.05)
    opened = harness.sessions()[before:]
    assert opened and all(s.ended_cleanly for s in opened)
    assert not heard.failures
    session.close()  # and once more, after the end


def test_every_input_millisecond_reaches_the_vendor(harness: EngineHarness) -> None:
    before = len(harness.sessions())
    session, heard = open_session(harness)
    speak(session, 2.0)
    speak(session, 0.4, voiced=False)
    session.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and stand_in_received_ms(harness, before) < 2300:
        time.sleep(0.05)
    assert stand_in_received_ms(harness, before) == pytest.approx(2400, abs=120)
    assert not heard.failures


def test_a_refused_session_reports_failure_unopened(harness: EngineHarness) -> None:
    with harness.refusing():
        session, heard = open_session(harness)
        try:
            speak(session, 0.2)
            heard.wait("on_failed", lambda: heard.failures, timeout=30)
        finally:
            session.close()
    assert heard.failures[0][1] is False
    assert heard.heard() is None


def test_a_dropped_connection_is_recovered_without_losing_speech(harness: EngineHarness) -> None:
    before = len(harness.sessions())
    session, heard = open_session(harness)
    try:
        speak(session, 1.0)
        # A pause, as in any call (the line carries silence): turn-based engines speak here.
        speak(session, 0.6, voiced=False)
        keep_line_open(session, "translated audio", lambda: heard.audio)
        harness.drop_all()
        dropped_at = time.monotonic()
        speak(session, 1.5)
        speak(session, 0.5, voiced=False)
        keep_line_open(
            session, "audio after the drop", lambda: heard.heard(after=dropped_at) is not None
        )
    finally:
        session.close()
    assert not heard.failures
    # What was said across the drop reached the vendor (held while reconnecting, then sent).
    assert stand_in_received_ms(harness, before) >= 2800


# Threads of a stand-in that outlive a connection by design: python-socketio's server runs a
# service task for its lifetime and a ping timer per client that ends after its interval.
STAND_IN_THREADS = ("(_service_task)", "(_send_ping)")


def wait_threads_end(before: set[threading.Thread], timeout: float = 15.0) -> None:
    """Every thread started since ``before`` was taken ends (the session's, the vendor SDK's,
    the stand-in's for that connection): a failed session leaks no socket and no thread."""
    deadline = time.monotonic() + timeout
    while True:
        left = [
            t.name
            for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.name.endswith(STAND_IN_THREADS)
        ]
        if not left:
            return
        assert time.monotonic() < deadline, f"threads still running: {sorted(left)}"
        time.sleep(0.05)


@pytest.mark.parametrize("fault", ["reject", "close"])
def test_a_failed_configuration_reports_failure_and_leaks_nothing(
    harness: EngineHarness, fault: ConfigFault
) -> None:
    before = set(threading.enumerate())
    with harness.failing_config(fault):
        session, heard = open_session(harness)
        try:
            speak(session, 0.2)
            heard.wait("on_failed", lambda: heard.failures, timeout=30)
        finally:
            session.close()
    # Told once, as never opened: the call says the interpreter is unavailable.
    assert len(heard.failures) == 1 and heard.failures[0][1] is False, heard.failures
    assert heard.heard() is None
    wait_threads_end(before)


def test_malformed_server_messages_are_skipped(harness: EngineHarness) -> None:
    before = len(harness.sessions())
    with harness.malformed():
        session, heard = open_session(harness)
        try:
            speak(session, 1.5)
            speak(session, 0.5, voiced=False)
            keep_line_open(session, "translated audio", lambda: heard.audio)
            keep_line_open(session, "translated text", lambda: heard.text("translation"))
        finally:
            session.close()
    assert not heard.failures
    # One vendor session carried it all: no message ended it (and made a replacement).
    assert len(harness.sessions()) - before == 1
    audio = heard.heard()
    assert audio is not None
    assert dominant_frequency(audio.samples, audio.rate_hz) == pytest.approx(tone_for("en"), abs=15)


def test_sessions_dropped_as_soon_as_configured_end_in_failure(
    harness: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A vendor that accepts every session and drops it at once: each loss must not buy a
    fresh recovery budget (retried forever, the direction silent); the budget runs out and
    the call is told. (The budget is shortened here; its length is not what is tested.)"""
    for module in (upstream, bland_session, soniox_engine, gpt_translator_engine):
        monkeypatch.setattr(module, "RECOVERY_BUDGET_S", 3.0)
    before = set(threading.enumerate())
    with harness.failing_config("drop"):
        session, heard = open_session(harness)
        try:
            # The line carries audio all along, as in a call (silence included).
            deadline = time.monotonic() + 45
            while not heard.failures and time.monotonic() < deadline:
                speak(session, 0.2, voiced=False)
        finally:
            session.close()
    # No session ever worked, so the call hears the interpreter is unavailable.
    assert len(heard.failures) == 1 and heard.failures[0][1] is False, heard.failures
    wait_threads_end(before)
