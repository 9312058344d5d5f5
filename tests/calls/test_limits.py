"""Limits that protect the owner's bill, and a shutdown that cuts no call without a notice."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from bridge.calls.lifetime import TIME_LIMIT_NOTICE_S, notice_at_s
from bridge.engines.registry import settings_from_env
from bridge.settings.prompts import prompt
from bridge.telephony.rest import DialRequest, TwilioRest
from tests.bridge_process import ACCOUNT_SID, AUTH_TOKEN, free_port
from tests.call_events import wait_until
from tests.call_helpers import (
    BRIDGE_NUMBER,
    CALLER_NUMBER,
    Stack,
    agent_of,
    bridge_stack,
    heard_seconds,
    tone_ulaw,
    wait_call_over,
    wait_streaming,
)
from tests.fakes.audio import ulaw_silence
from tests.fakes.twilio import DialBehaviour, FakeTwilio

pytestmark = pytest.mark.slow
SECOND_CALLER = "+34911222444"
STRANGER = "+34600000000"


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "MAX_CONCURRENT_CALLS": "1",
        "MAX_CALL_SECONDS": "12",  # the notice goes out a quarter before: 9 s into the call
        "ALLOWED_CALLERS": f"{CALLER_NUMBER}, {SECOND_CALLER}",
    }
    with bridge_stack(tmp_path_factory.mktemp("limits"), env, None) as stack:
        yield stack


def test_callers_off_the_allowlist_are_declined_politely(limited: Stack) -> None:
    # The module's bridge is shared: count what this call dials, whatever ran before it.
    dialled_before = len(limited.twilio.agent_calls())
    caller = limited.twilio.place_call(ulaw_silence(8000 * 5), from_=STRANGER, to=BRIDGE_NUMBER)
    assert caller.wait_ended(10)
    assert caller.said == [prompt("not_allowed", "es").text]
    assert len(limited.twilio.agent_calls()) == dialled_before, "nobody is dialled for a stranger"
    assert limited.bridge.metric("bridge_calls_refused_total", 'reason="not_allowed"') == 1


def test_concurrency_limit_then_time_limit(limited: Stack) -> None:
    twilio, bridge = limited.twilio, limited.bridge
    twilio.default_dial = DialBehaviour(audio=tone_ulaw(30))
    first = twilio.place_call(tone_ulaw(30), from_=CALLER_NUMBER, to=BRIDGE_NUMBER)
    first_agent = agent_of(twilio, first)
    wait_streaming(twilio, first, first_agent)

    # A second caller while the only slot is taken hears that all interpreters are busy.
    second = twilio.place_call(ulaw_silence(8000 * 5), from_=SECOND_CALLER, to=BRIDGE_NUMBER)
    assert second.wait_ended(10)
    assert second.said == [prompt("all_busy", "es").text]
    assert bridge.metric("bridge_calls_refused_total", 'reason="all_busy"') == 1
    heard = heard_seconds(first_agent)
    assert wait_until(lambda: heard_seconds(first_agent) > heard + 0.5), "the first call stopped"

    # MAX_CALL_SECONDS: each party hears the notice in their own language, then both end.
    assert first.wait_ended(20) and first_agent.wait_ended(5)
    assert first.said[-1] == prompt("time_limit", "es").text
    assert first_agent.said[-1] == prompt("time_limit", "en").text
    assert 9.0 <= first.ended_at - first.created_at <= 16.0  # type: ignore[operator]
    wait_call_over(bridge)
    assert bridge.metric("bridge_calls_ended_total", 'reason="time_limit"') == 1


@pytest.mark.parametrize("max_call_s", [5, 8])
def test_a_short_time_limit_lets_the_call_run_its_length(
    tmp_path_factory: pytest.TempPathFactory, max_call_s: int
) -> None:
    # A limit shorter than the notice's fixed lead once ended every call 0.6 s in.
    env = {"MAX_CALL_SECONDS": str(max_call_s)}
    with bridge_stack(tmp_path_factory.mktemp("short-limit"), env, None) as stack:
        stack.twilio.default_dial = DialBehaviour(audio=tone_ulaw(30))
        caller = stack.twilio.place_call(tone_ulaw(30), from_=CALLER_NUMBER, to=BRIDGE_NUMBER)
        agent = agent_of(stack.twilio, caller)
        wait_streaming(stack.twilio, caller, agent)
        assert caller.wait_ended(max_call_s + 10) and agent.wait_ended(5)
        assert caller.said[-1] == prompt("time_limit", "es").text
        lasted = caller.ended_at - caller.created_at  # type: ignore[operator]
        # The notice lead is at most a quarter of the limit.
        assert lasted >= 0.75 * max_call_s, f"ended after {lasted:.1f} s"
        assert heard_seconds(agent) >= 0.75 * max_call_s - 2.0, "the agent heard the caller"
        wait_call_over(stack.bridge)
        assert stack.bridge.metric("bridge_calls_ended_total", 'reason="time_limit"') == 1


@pytest.mark.parametrize("max_call_s", [5, 8, 12, 40, 14_400])
def test_the_time_limit_notice_fits_inside_every_allowed_limit(max_call_s: int) -> None:
    at = notice_at_s(max_call_s)
    assert 0.75 * max_call_s <= at < max_call_s
    assert max_call_s - at <= TIME_LIMIT_NOTICE_S


def test_sigterm_drains_then_ends_calls_with_a_notice(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    grace_s = 6.0
    env = {"SHUTDOWN_GRACE_SECONDS": str(int(grace_s))}
    with bridge_stack(tmp_path_factory.mktemp("shutdown"), env, None) as stack:
        twilio, bridge = stack.twilio, stack.bridge
        twilio.default_dial = DialBehaviour(audio=tone_ulaw(30))
        caller = twilio.place_call(tone_ulaw(30), from_=CALLER_NUMBER, to=BRIDGE_NUMBER)
        agent = agent_of(twilio, caller)
        wait_streaming(twilio, caller, agent)
        bridge.proc.send_signal(signal.SIGTERM)
        sigterm_at = time.monotonic()
        assert wait_until(lambda: "shutting down: no new calls" in bridge.log(), 10)

        # No new calls: the voice webhook answers 503 at once (Twilio then uses the fallback).
        refused = twilio.place_call(ulaw_silence(8000), from_=SECOND_CALLER, to=BRIDGE_NUMBER)
        assert refused.wait_ended(10)
        answer = next(w for w in twilio.webhooks if w.params.get("CallSid") == refused.sid)
        assert answer.status == 503, "a draining bridge must not take new calls"
        assert refused.stream is None

        # The live call goes on through the grace period …
        heard = heard_seconds(agent)
        assert wait_until(lambda: heard_seconds(agent) > heard + 1.0, grace_s - 1.0), (
            "audio stopped during the grace period"
        )
        assert not caller.ended.is_set()

        # … then both parties hear why it ends, and the process exits cleanly.
        assert caller.wait_ended(15) and agent.wait_ended(5)
        assert caller.said[-1] == prompt("shutdown", "es").text
        assert agent.said[-1] == prompt("shutdown", "en").text
        assert caller.ended_at is not None
        assert bridge.proc.wait(timeout=30) == 0
        assert time.monotonic() - sigterm_at >= grace_s


def test_ending_a_call_that_already_ended_is_not_an_error() -> None:
    with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, f"http://127.0.0.1:{free_port()}") as twilio:
        twilio.default_dial = DialBehaviour(outcome="busy", answer_delay_s=0.0)
        settings = settings_from_env(
            {
                "PUBLIC_BASE_URL": "https://bridge.example.com",
                "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "AGENT_NUMBER": "+15557654321",
                "ENGINE": "relay",
                "TWILIO_API_BASE_URL": twilio.rest_base_url,
            },
            env_file=None,
        )
        rest = TwilioRest(settings)
        sid = rest.dial(
            DialRequest("+15557654321", BRIDGE_NUMBER, "<Response/>", "https://x/s", 30)
        )
        assert twilio.calls[sid].ended.wait(5)
        rest.hang_up(sid, answered=True)  # whatever Twilio answers, it does not raise
        assert rest.redirect(sid, "<Response><Hangup/></Response>") is False
        assert rest.hang_up("CA" + "0" * 32, answered=False) is False  # unknown: 404
