"""The call keeps interpreting through engine faults, REST failures, bursts and rotation.

Faults are injected into the loopback stand-ins (a socket dropped mid-call, refused
handshakes, ``error`` events, bursts of output, failing REST requests); where a fault hits one
call, a second healthy call runs in parallel and must not notice.
"""

from __future__ import annotations

import base64
import signal
import time

import pytest

from bridge.settings.prompts import prompt
from bridge.sim.rest import RestError
from tests.bridge_process import free_port
from tests.call_helpers import (
    BRIDGE_NUMBER,
    CALLER_NUMBER,
    Stack,
    agent_of,
    bridge_stack,
    heard_seconds,
    new_sessions,
    played_gaps,
    received_seconds,
    started_at,
    tone_ulaw,
    wait_call_over,
    wait_streaming,
)
from tests.fakes.audio import pcm16_to_bytes, sine, ulaw_silence
from tests.fakes.openai_events import output_audio_delta
from tests.fakes.openai_translate import FakeSession, FakeTranslationServer, tone_for
from tests.fakes.twilio import DialBehaviour, FakeCall

pytestmark = pytest.mark.slow


def start_call(stack: Stack, audio: bytes) -> tuple[FakeCall, FakeCall, FakeSession, FakeSession]:
    """Place a call; return caller, agent and its (caller→agent, agent→caller) sessions."""
    assert stack.openai is not None
    before = len(stack.openai.sessions)
    stack.twilio.default_dial = DialBehaviour(audio=ulaw_silence(8000 * 30))
    caller = stack.twilio.place_call(audio, from_=CALLER_NUMBER, to=BRIDGE_NUMBER)
    agent = agent_of(stack.twilio, caller)
    wait_streaming(stack.twilio, caller, agent)
    sessions = {s.output_language: s for s in new_sessions(stack.openai, before)}
    return caller, agent, sessions["en"], sessions["es"]


def sessions_since(openai: FakeTranslationServer, first: FakeSession) -> list[FakeSession]:
    every = openai.sessions
    return every[every.index(first) :]


@pytest.mark.parametrize("close_code", [1011, None], ids=["close-1011", "abrupt-1006"])
def test_dropped_engine_socket_reconnects_and_nothing_said_is_lost(
    stack: Stack, close_code: int | None, record_property: object
) -> None:
    openai, bridge = stack.openai, stack.bridge
    assert openai is not None
    caller, agent, to_agent, _ = start_call(stack, tone_ulaw(14))
    # A healthy call alongside, placed after the first so its sessions are told apart.
    other_caller, other_agent, other_to_agent, _ = start_call(stack, tone_ulaw(14))
    time.sleep(2.0)

    # The socket drops, and the engine refuses the first reconnection attempts for a while:
    # the speaker goes on talking through the whole outage.
    openai.refuse_status = 503
    dropped_at = time.monotonic()
    to_agent.drop(close_code)
    time.sleep(1.2)
    openai.refuse_status = None
    time.sleep(4.0)

    gap = played_gaps(agent, dropped_at - 0.1, time.monotonic(), tone_for("en"))
    record_property("gap_after_drop_s", round(gap, 3))  # type: ignore[operator]
    print(f"\naudio gap heard after an engine drop ({close_code}): {gap:.2f} s")
    assert gap < 3.0, f"the agent heard {gap:.2f} s of silence"

    # The replacement session was configured again before any audio reached it …
    replacements = [s for s in sessions_since(openai, to_agent)[1:] if s.output_language == "en"]
    assert replacements, "no replacement session"
    assert replacements[0].updates and replacements[0].invalid_events == []
    first_append = replacements[0].appends[0].time
    first_update = next(
        t for t, e in replacements[0].received_events if e["type"] == "session.update"
    )
    assert first_update <= first_append
    # … and what the caller said during the outage reached it, rather than being dropped.
    assert caller.stream is not None
    sent = caller.stream.media_sent * 0.02
    got = received_seconds([to_agent, replacements[0]])
    assert got >= sent - 0.5, f"engine got {got:.2f} s of {sent:.2f} s the caller said"

    # The parallel call never noticed.
    assert other_to_agent.ended.is_set() is False
    # Nothing shared stalled it: a reconnection in its path would cost it ≥ 0.15 s of
    # translation, a stalled process seconds; the bound leaves room for a busy machine's
    # scheduling noise (this is not a timing benchmark).
    assert played_gaps(other_agent, dropped_at, time.monotonic(), tone_for("en")) < 1.0
    assert not other_caller.ended.is_set() and not caller.ended.is_set()
    for c in (caller, other_caller):
        c.hangup()
    wait_call_over(bridge)


def test_error_event_is_logged_and_the_call_goes_on(stack: Stack) -> None:
    caller, agent, to_agent, _ = start_call(stack, tone_ulaw(8))
    assert stack.twilio.wait_for(lambda: heard_seconds(agent) > 0.5, 15), "no translation"
    to_agent.send_error("server_error", "The server had an error while processing your request.")
    heard_before = heard_seconds(agent)
    assert stack.twilio.wait_for(lambda: heard_seconds(agent) > heard_before + 1.0, 15), (
        "translation stopped after an error event"
    )
    assert not caller.ended.is_set()
    assert stack.twilio.wait_for(
        lambda: "translation server error type=server_error" in stack.bridge.log(), 10
    )
    caller.hangup()
    wait_call_over(stack.bridge)


def test_burst_of_output_is_bounded_and_counted(stack: Stack) -> None:
    caller, agent, to_agent, _ = start_call(stack, ulaw_silence(8000 * 20))
    dropped_before = stack.bridge.metric(
        "bridge_audio_dropped_seconds_total", 'where="playout_backlog"'
    )
    tone = base64.b64encode(pcm16_to_bytes(sine(440, 4800, 24000, 8000))).decode()
    for i in range(150):  # 30 s of translated audio at once, as after a long stall
        to_agent.send(output_audio_delta(tone, 200 * (i + 1)))

    def dropped_now() -> float:
        where = 'where="playout_backlog"'
        return stack.bridge.metric("bridge_audio_dropped_seconds_total", where) - dropped_before

    stack.twilio.wait_for(lambda: dropped_now() >= 25.5, 15, interval=0.1)
    dropped = dropped_now()
    # The leg keeps at most BACKLOG_MAX_SECONDS (3 s) unsent, plus ~0.1 s ahead at Twilio:
    # the rest, ~27 s, is dropped and counted, so the listener stays near-live.
    assert 25.5 <= dropped <= 27.5, dropped
    assert heard_seconds(agent) < 5.0
    caller.hangup()
    wait_call_over(stack.bridge)


def test_outage_longer_than_the_hold_keeps_the_newest_audio_and_recovers(stack: Stack) -> None:
    openai = stack.openai
    assert openai is not None
    caller, agent, to_agent, _ = start_call(stack, tone_ulaw(30))
    assert stack.twilio.wait_for(lambda: heard_seconds(agent) > 0.5, 15), "no translation"
    held_before = stack.bridge.metric(
        "bridge_audio_dropped_seconds_total", 'where="engine_input_held"'
    )
    openai.refuse_status = 503  # the SDK's retries (~6 s) and the first replacement fail
    to_agent.drop(1011)
    time.sleep(8.0)
    openai.refuse_status = None
    assert stack.twilio.wait_for(
        lambda: any(
            s.output_language == "en" and s.appends for s in sessions_since(openai, to_agent)[1:]
        ),
        15,
    ), "no replacement session after the outage"
    replacement = next(
        s for s in sessions_since(openai, to_agent)[1:] if s.output_language == "en" and s.appends
    )
    # The burst is over once an append arrives after it.
    assert stack.twilio.wait_for(
        lambda: replacement.appends[-1].time > replacement.appends[0].time + 0.1, 15
    )
    # What arrived at once (first 0.1 s): the held backlog, no more than the 5 s hold plus an
    # append's worth of audio spoken meanwhile.
    first = replacement.appends[0].time
    burst = sum(a.n_bytes for a in replacement.appends if a.time < first + 0.1)
    assert 4.0 <= burst / 48000 <= 5.3, f"{burst / 48000:.2f} s sent at once after the outage"
    held = (
        stack.bridge.metric("bridge_audio_dropped_seconds_total", 'where="engine_input_held"')
        - held_before
    )
    assert held > 1.0, "older audio beyond the hold should be dropped and counted"
    heard = heard_seconds(agent)
    assert stack.twilio.wait_for(lambda: heard_seconds(agent) > heard + 0.5, 15), (
        "translation did not resume"
    )
    assert not caller.ended.is_set()
    caller.hangup()
    wait_call_over(stack.bridge)


@pytest.mark.parametrize("status", [403, 429])
def test_engine_refusing_at_call_start_ends_the_call_politely(stack: Stack, status: int) -> None:
    openai = stack.openai
    assert openai is not None
    stack.twilio.default_dial = DialBehaviour(answer_delay_s=3.0)
    openai.refuse_status = status
    try:
        caller = stack.twilio.place_call(
            ulaw_silence(8000 * 10), from_=CALLER_NUMBER, to=BRIDGE_NUMBER
        )
        assert caller.wait_ended(15)
    finally:
        openai.refuse_status = None
    assert caller.said[-1] == prompt("interpreter_unavailable", "es").text
    assert agent_of(stack.twilio, caller).wait_ended(10)
    wait_call_over(stack.bridge)
    assert f"HTTP {status}" in stack.bridge.log()


@pytest.mark.parametrize("fault", ["reject", "close"])
def test_configuration_failing_at_call_start_ends_the_call_and_records_why(
    stack: Stack, fault: str
) -> None:
    """The engine takes the socket but refuses (or hangs up on) its session.update: the call
    must end with the reason recorded, not go on with a direction that never speaks."""
    openai = stack.openai
    assert openai is not None
    before = stack.bridge.metric("bridge_calls_ended_total", 'reason="engine_unavailable"')
    stack.twilio.default_dial = DialBehaviour(answer_delay_s=3.0)
    openai.config_fault = fault
    try:
        caller = stack.twilio.place_call(
            ulaw_silence(8000 * 10), from_=CALLER_NUMBER, to=BRIDGE_NUMBER
        )
        assert caller.wait_ended(20)
    finally:
        openai.config_fault = None
    assert caller.said[-1] == prompt("interpreter_unavailable", "es").text
    wait_call_over(stack.bridge)
    after = stack.bridge.metric("bridge_calls_ended_total", 'reason="engine_unavailable"')
    assert after == before + 1
    assert "could not be configured" in stack.bridge.log()


def test_failed_dial_tells_the_caller_and_records_why(stack: Stack) -> None:
    stack.twilio.create_failure = RestError(500, 20500, "Internal Server Error")
    before = stack.bridge.metric("bridge_calls_ended_total", 'reason="dial_failed"')
    try:
        caller = stack.twilio.place_call(
            ulaw_silence(8000 * 10), from_=CALLER_NUMBER, to=BRIDGE_NUMBER
        )
        assert caller.wait_ended(15)
    finally:
        stack.twilio.create_failure = None
    assert caller.said[-1] == prompt("agent_unavailable", "es").text
    wait_call_over(stack.bridge)
    assert stack.bridge.metric("bridge_calls_ended_total", 'reason="dial_failed"') == before + 1
    assert "HTTP 500 code 20500" in stack.bridge.log()


def test_engine_unreachable_at_call_start(tmp_path_factory: pytest.TempPathFactory) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    env = {"ENGINE": "openai", "OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": closed}
    with bridge_stack(tmp_path_factory.mktemp("unreachable"), env, None) as stack:
        stack.twilio.default_dial = DialBehaviour(answer_delay_s=3.0)
        caller = stack.twilio.place_call(
            ulaw_silence(8000 * 10), from_=CALLER_NUMBER, to=BRIDGE_NUMBER
        )
        assert caller.wait_ended(15)
        assert caller.said[-1] == prompt("interpreter_unavailable", "es").text
        wait_call_over(stack.bridge)
        assert stack.bridge.metric("bridge_calls_ended_total", 'reason="engine_unavailable"') == 1
        # The call ended before the agent's dial returned: nothing of it may linger (a stale
        # registry entry would hold a shutdown for its whole grace period).
        stack.bridge.proc.send_signal(signal.SIGTERM)
        assert stack.bridge.proc.wait(timeout=10) == 0


def test_sessions_rotate_before_their_lifetime_without_loss(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """SESSION_MAX_SECONDS=4 over a 14 s call: what a 2-hour call does with 55-minute sessions."""
    speech_pattern = (tone_ulaw(1.4) + ulaw_silence(int(8000 * 0.8))) * 7
    with FakeTranslationServer() as openai:
        env = {"SESSION_MAX_SECONDS": "4"}
        with bridge_stack(tmp_path_factory.mktemp("rotate"), env, openai) as stack:
            caller, agent, to_agent, _ = start_call(stack, speech_pattern)
            time.sleep(len(speech_pattern) / 8000 + 1.0)
            chain = [s for s in sessions_since(openai, to_agent) if s.output_language == "en"]
            assert len(chain) >= 3, f"only {len(chain)} caller→agent sessions in 16 s"
            for old in chain[:-1]:
                assert old.closed_by_client, "a rotated-out session must get session.close"
                assert old.invalid_events == []
            assert caller.stream is not None
            sent = caller.stream.media_sent * 0.02
            got = received_seconds(chain)
            # Every 20 ms the caller said went to exactly one session: none lost, none twice.
            assert sent - 0.3 <= got <= sent + 0.05, (got, sent)
            produced = sum(len(s.sent_deltas) for s in chain) * 0.2
            assert heard_seconds(agent) >= produced - 0.25, "translated audio lost at a switch"
            assert played_gaps(agent, started_at(agent) + 2, time.monotonic(), tone_for("en")) < 1.2
            caller.hangup()
            wait_call_over(stack.bridge)
