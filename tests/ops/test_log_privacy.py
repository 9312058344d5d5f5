"""A whole call's log holds no secret, and no speech unless LOG_SPEECH=on.

The real bridge under gunicorn takes a call through the language menu (an answer it does not
understand, then one it does) with the OpenAI stand-in translating, its transcripts made of
words found nowhere else; then the bridge's whole log is searched for every secret it was
given and every word anyone said.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.bridge_process import AUTH_TOKEN, OPENAI_KEY
from tests.call_helpers import (
    BRIDGE_NUMBER,
    CALLER_NUMBER,
    Stack,
    agent_of,
    bridge_stack,
    tone_ulaw,
    wait_streaming,
)
from tests.fakes import openai_events as wire
from tests.fakes.openai_session import FakeSession
from tests.fakes.openai_translate import FakeTranslationServer, ToneTranslator
from tests.fakes.twilio import GatherAnswer

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "admin-token-privacy-5d1e9c"
METRICS_TOKEN = "metrics-token-privacy-83b0a2"
SAID = "quokkasaid "  # what the input transcript says was spoken
TRANSLATED = "zanzibartranslated "  # the translation's transcript
MENU_MISHEARD = "Vesuvius marmalade"  # a spoken menu answer that names no language
SECRETS = (AUTH_TOKEN, OPENAI_KEY, ADMIN_TOKEN, METRICS_TOKEN)


class WordTranslator(ToneTranslator):
    """The tone translator, with transcripts made of words no log line could hold by chance."""

    def on_frame(self, session: FakeSession, index: int, frame: bytes) -> None:
        if not self.is_speech(frame):
            return
        elapsed_ms = self.send_tone(session, index)
        for kind, word in (("output", TRANSLATED), ("input", SAID)):
            event = wire.transcript_delta(f"session.{kind}_transcript.delta", word, elapsed_ms)
            session.send(event, self.delay_s)


def stack_with(log_dir: Path, log_speech: bool) -> Iterator[Stack]:
    env = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "METRICS_TOKEN": METRICS_TOKEN,
        "CALLER_LANGUAGES": "es,en",
        "LOG_SPEECH": "on" if log_speech else "off",
    }
    with FakeTranslationServer(WordTranslator()) as openai, bridge_stack(log_dir, env, openai) as s:
        yield s


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from stack_with(tmp_path_factory.mktemp("privacy-default"), log_speech=False)


@pytest.fixture(scope="module")
def speaking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from stack_with(tmp_path_factory.mktemp("privacy-speech"), log_speech=True)


def whole_call(stack: Stack) -> str:
    """One call through the menu and both translation directions; its recorded transcript."""
    twilio = stack.twilio
    caller = twilio.place_call(
        tone_ulaw(6),
        from_=CALLER_NUMBER,
        to=BRIDGE_NUMBER,
        gather_answers=(GatherAnswer(speech=MENU_MISHEARD), GatherAnswer(speech="English")),
    )
    agent = agent_of(twilio, caller)
    wait_streaming(twilio, caller, agent)
    # Both sides speak; the stand-in's transcripts reach the call store.
    deadline = time.monotonic() + 30
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    transcript = ""
    while not (SAID.strip() in transcript and TRANSLATED.strip() in transcript):
        assert time.monotonic() < deadline, f"no transcript recorded: {transcript!r}"
        time.sleep(0.2)
        url = f"{stack.bridge.url}/api/calls/{caller.sid}/transcript.txt"
        answer = requests.get(url, headers=headers, timeout=5)
        transcript = answer.text if answer.status_code == 200 else ""
    caller.hangup()
    assert caller.wait_ended(10) and agent.wait_ended(10)
    wait_metrics_idle(stack)
    return transcript


def wait_metrics_idle(stack: Stack) -> None:
    """The call is over (``/metrics`` wants its token here)."""
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    deadline = time.monotonic() + 15
    while True:
        text = requests.get(f"{stack.bridge.url}/metrics", headers=headers, timeout=5).text
        if "\nbridge_active_calls 0.0" in text:
            return
        assert time.monotonic() < deadline, "the bridge still counts an active call"
        time.sleep(0.1)


def test_default_log_holds_no_secret_and_no_speech(quiet: Stack) -> None:
    whole_call(quiet)
    log = quiet.bridge.log()
    assert "language menu attempt 1: no choice in speech" in log  # the line is still there
    for secret in SECRETS:
        assert secret not in log
    for words in (SAID, TRANSLATED, MENU_MISHEARD):
        assert words.strip() not in log


def test_log_speech_on_logs_what_was_said_but_still_no_secret(speaking: Stack) -> None:
    whole_call(speaking)
    log = speaking.bridge.log()
    for secret in SECRETS:
        assert secret not in log
    for words in (SAID, TRANSLATED, MENU_MISHEARD):
        assert words.strip() in log
