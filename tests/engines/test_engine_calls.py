"""A whole call through the bridge under gunicorn for every engine, each against its stand-in.

The caller "speaks" a steady tone, then the agent does; each stand-in translates speech into
the tone of the listener's language (en 440 Hz, es 660 Hz). Each party must hear the other's
translation on their own leg, and every vendor session must be ended the vendor's way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.call_helpers import (
    BRIDGE_NUMBER,
    CALLER_NUMBER,
    Stack,
    agent_of,
    bridge_stack,
    heard_tone_s,
    tone_ulaw,
    wait_call_over,
    wait_streaming,
)
from tests.engine_harness import EngineHarness
from tests.engine_standins import HARNESSES
from tests.fakes.audio import ulaw_silence
from tests.fakes.openai_translate import tone_for
from tests.fakes.twilio import DialBehaviour

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=sorted(HARNESSES))
def engine_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[EngineHarness, Stack]]:
    name = str(request.param)
    with HARNESSES[name]() as harness:
        log_dir = tmp_path_factory.mktemp(f"engine-{name}")
        with bridge_stack(log_dir, harness.env(), None) as stack:
            yield harness, stack


def test_a_call_is_interpreted_both_ways(engine_stack: tuple[EngineHarness, Stack]) -> None:
    harness, stack = engine_stack
    twilio = stack.twilio
    before = len(harness.sessions())
    # The caller speaks first (1-3 s after answering), the agent after (5-7 s).
    twilio.default_dial = DialBehaviour(audio=ulaw_silence(8000 * 4) + tone_ulaw(2.0))
    caller = twilio.place_call(
        ulaw_silence(8000) + tone_ulaw(2.0), from_=CALLER_NUMBER, to=BRIDGE_NUMBER
    )
    agent = agent_of(twilio, caller)
    wait_streaming(twilio, caller, agent)
    assert twilio.wait_for(lambda: heard_tone_s(agent, tone_for("en")) >= 0.6, 20), (
        "the agent never heard the caller's words in English"
    )
    assert twilio.wait_for(lambda: heard_tone_s(caller, tone_for("es")) >= 0.6, 20), (
        "the caller never heard the agent's words in Spanish"
    )
    caller.hangup()
    wait_call_over(stack.bridge)
    assert caller.violations == [] and agent.violations == []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(
        s.ended_cleanly for s in harness.sessions()[before:]
    ):
        time.sleep(0.05)
    sessions = harness.sessions()[before:]
    assert len(sessions) >= 2 and all(s.ended_cleanly for s in sessions)
