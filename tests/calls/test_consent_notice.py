"""CONSENT_NOTICE=on: both parties hear the consent notice, each in their own language and
voice, before their Media Stream starts (so before anything of theirs is interpreted or
transcribed). Whole calls through the real bridge under gunicorn, with the Twilio stand-in
answering the language menu and playing both legs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.settings.prompts import prompt
from bridge.sim.twiml import Connect, Say, parse_twiml
from tests.bridge_process import AGENT_NUMBER
from tests.call_helpers import (
    BRIDGE_NUMBER,
    CALLER_NUMBER,
    Stack,
    agent_of,
    bridge_stack,
    tone_ulaw,
    wait_call_over,
    wait_streaming,
)
from tests.fakes.twilio import FakeCall, GatherAnswer

pytestmark = pytest.mark.slow

MENU = ("es", "en", "fr")  # keys 2, 1, 3 in config/languages.json


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Named ``stack`` so tests/conftest.py ends any call a failing test leaves behind."""
    env = {
        "CONSENT_NOTICE": "on",
        "CALLER_LANGUAGES": ",".join(MENU),
        "AGENT_LANGUAGES": f"{AGENT_NUMBER}=de",  # the agent at this number speaks German
    }
    with bridge_stack(tmp_path_factory.mktemp("consent"), env, None) as stack:
        yield stack


def said_before_the_stream(call: FakeCall, document: str) -> list[str]:
    """The ``<Say>`` texts of ``document`` that come before its ``<Connect><Stream>``; Twilio
    runs verbs in order, so these are what the party heard before their stream started."""
    verbs = parse_twiml(document)
    connect = next(i for i, verb in enumerate(verbs) if isinstance(verb, Connect))
    assert all(isinstance(verb, Say) for verb in verbs[:connect]), verbs
    return [verb.text for verb in verbs[:connect] if isinstance(verb, Say)]


def call_in(stack: Stack, digits: str) -> tuple[FakeCall, FakeCall]:
    caller = stack.twilio.place_call(
        tone_ulaw(20.0),
        from_=CALLER_NUMBER,
        to=BRIDGE_NUMBER,
        gather_answers=(GatherAnswer(digits=digits),),
    )
    agent = agent_of(stack.twilio, caller)
    wait_streaming(stack.twilio, caller, agent)
    return caller, agent


def hang_up(stack: Stack, caller: FakeCall, agent: FakeCall) -> None:
    caller.hangup()
    assert caller.wait_ended(10) and agent.wait_ended(10)
    wait_call_over(stack.bridge)
    assert caller.violations == [] and agent.violations == []


@pytest.mark.parametrize(
    ("digits", "caller_language", "caller_language_in_german", "say"),
    [
        ("3", "fr", "Französisch", ("fr-FR", "Polly.Lea")),
        ("2", "es", "Spanisch", ("es-US", "Polly.Lupe")),
    ],
)
def test_both_parties_hear_the_notice_in_their_language_before_their_stream(
    stack: Stack,
    digits: str,
    caller_language: str,
    caller_language_in_german: str,
    say: tuple[str, str],
) -> None:
    caller, agent = call_in(stack, digits)
    connecting = prompt("connecting", caller_language).text
    caller_notice = prompt("consent_notice", caller_language).text
    # The caller: the greeting, then the notice, both in the language they chose.
    assert caller.said[-2:] == [connecting, caller_notice]
    assert [(s.language, s.voice) for s in caller.says[-2:]] == [say, say]
    assert said_before_the_stream(caller, caller.twiml_documents[-1]) == [connecting, caller_notice]

    # The agent: the whisper, then the notice, both in German (the agent's number sets it).
    whisper = prompt("agent_whisper", "de", caller_language=caller_language_in_german).text
    agent_notice = prompt("consent_notice", "de").text
    assert agent_notice == (
        "Dieser Anruf wird von einem automatischen System gedolmetscht und transkribiert."
    )
    assert agent.said == [whisper, agent_notice]
    assert [(s.language, s.voice) for s in agent.says] == [("de-DE", "Polly.Vicki")] * 2
    assert agent.initial_twiml is not None
    assert said_before_the_stream(agent, agent.initial_twiml) == [whisper, agent_notice]
    hang_up(stack, caller, agent)
