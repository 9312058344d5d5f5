"""An outsider with a captured upgrade signature or a captured voice webhook gets nowhere.

The real bridge runs under gunicorn (relay engine) with the Twilio stand-in on loopback. The
attacker holds what the issue grants them: a correctly signed ``/media`` upgrade (its signature
covers a constant URL, so one captured header serves forever), the CallSids of a live call and
the names of the stream parameters; and a validly signed voice webhook of an earlier call.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bridge.sim.rest import new_sid
from bridge.telephony.stream_token import StreamTokens
from tests.bridge_process import ACCOUNT_SID, AUTH_TOKEN, free_port, run_bridge
from tests.fakes.twilio import FakeTwilio
from tests.web.test_bad_input import (
    BRIDGE_NUMBER,
    CALLER_NUMBER,
    CONNECTED,
    POLICY_VIOLATION,
    WAIT_S,
    LiveCall,
    Peer,
    Stack,
    assert_healthy,
    bad_counts,
    expect_bad_counts,
    heard,
    new_call,
    start_message,
    tone,
    wait_active_calls,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    port = free_port()
    with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, f"http://127.0.0.1:{port}") as twilio:
        env = {"ENGINE": "relay", "TWILIO_API_BASE_URL": twilio.rest_base_url}
        with run_bridge(port, env, tmp_path_factory.mktemp("hijack")) as bridge:
            yield Stack(bridge, twilio, bridge.worker_pid())


def agent_params(call: LiveCall) -> dict[str, str]:
    """The agent leg's stream parameters, from the TwiML the bridge gave Twilio's REST API."""
    root = ET.fromstring(call.agent.initial_twiml or "")
    stream = root.find("./Connect/Stream")
    assert stream is not None
    return {p.get("name", ""): p.get("value", "") for p in stream.iter("Parameter")}


def refused_and_deaf(stack: Stack, start: dict[str, Any], what: str) -> None:
    """A signed upgrade whose ``start`` is refused with 1008, and nothing is ever sent to it."""
    peer = Peer(stack.bridge)
    peer.send_json(CONNECTED)
    peer.send_json(start)
    assert peer.wait_closed() == POLICY_VIOLATION, what
    # Media it sends after its start is never heard by the other party either.
    assert peer.received == 0, f"{what}: the refused peer was sent {peer.received} messages"
    peer.close()


def test_a_forged_start_naming_a_live_call_is_refused_and_hears_nothing(stack: Stack) -> None:
    """The caller's stream is not up yet (the moment a hijacker would aim for): a start that
    names the live call, its caller's CallSid and the right leg, but lacks the token that
    only our TwiML carries, is refused; so is every near miss. The real legs carry on."""
    bridge = stack.bridge
    call = new_call(stack)
    ours = call.stream_params
    token = ours.get("streamToken", "v1.0.none")  # (a bridge without tokens: every case binds)
    version, expires, mac = token.split(".")
    other = new_call(stack)  # a second live call: its token is for another call
    minted = StreamTokens(AUTH_TOKEN)  # (the test knows the secret: an expired real token)
    forged: dict[str, Callable[[str], dict[str, Any]]] = {
        "no token": lambda s: start_message(
            s, call.sid, params={"bridgeCallSid": call.sid, "leg": "caller"}
        ),
        "a made-up token": lambda s: start_message(
            s, call.sid, params={**ours, "streamToken": f"v1.{int(time.time()) + 60}.{'A' * 43}"}
        ),
        "a later expiry": lambda s: start_message(
            s, call.sid, params={**ours, "streamToken": f"{version}.{int(expires) + 9}.{mac}"}
        ),
        "another call's token": lambda s: start_message(
            s, call.sid, params={**ours, "streamToken": other.stream_params.get("streamToken", "")}
        ),
        "the caller's token for the agent leg": lambda s: start_message(
            s, call.agent.sid, params={**ours, "leg": "agent"}
        ),
        "an expired token": lambda s: start_message(
            s,
            call.sid,
            params={
                **ours,
                "streamToken": minted.issue(call.sid, "caller", time.time() - 600, 120),
            },
        ),
        "the agent's own token, a second stream for the live agent leg": lambda s: start_message(
            s, call.agent.sid, params=agent_params(call)
        ),
    }
    before = bad_counts(bridge)
    for what, build in forged.items():
        refused_and_deaf(stack, build(new_sid("MZ")), what)
        assert_healthy(stack)
    expect_bad_counts(bridge, before, {"rejected_stream": len(forged)})
    assert not call.agent.ended.is_set(), "a refused stream ended the call it named"
    assert token not in bridge.log(), "a stream token was logged"

    # The real caller's stream binds, and both directions flow.
    peer = Peer(bridge)
    peer.send_json(CONNECTED)
    peer.send_json(start_message(peer.stream_sid, call.sid, params=ours))
    chunk = tone(50)
    assert peer.media(chunk) and heard(call.agent, chunk), "the real caller did not bind"
    assert wait_until(lambda: peer.received > 0, WAIT_S), "the caller hears nothing"

    # Once it has, the very parameters of its TwiML on a second socket are refused too: a
    # leg has one stream, and the live one is not disturbed.
    refused_and_deaf(
        stack, start_message(new_sid("MZ"), call.sid, params=ours), "a second caller stream"
    )
    chunk = tone(51)
    assert peer.media(chunk) and heard(call.agent, chunk), "the live caller was disturbed"
    peer.close()
    assert call.agent.wait_ended(WAIT_S)
    other.agent.hangup()
    wait_active_calls(bridge, 0)

    # After the call, its token opens nothing.
    refused_and_deaf(stack, start_message(new_sid("MZ"), call.sid, params=ours), "after the end")


def voice_webhook(sid: str) -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT_SID,
        "CallSid": sid,
        "From": CALLER_NUMBER,
        "To": BRIDGE_NUMBER,
        "CallStatus": "ringing",
        "Direction": "inbound",
    }


def dials_for(stack: Stack, sid: str) -> int:
    """How many times the bridge dialled the agent for the call ``sid`` (REST creates)."""
    return sum(
        1
        for r in stack.twilio.rest_requests
        if r.method == "POST"
        and r.path.endswith("/Calls.json")
        and sid in "".join(r.params.get("Twiml", []))
    )


def test_a_replayed_voice_webhook_never_dials_the_agent_again(stack: Stack) -> None:
    bridge, twilio = stack.bridge, stack.twilio
    call = new_call(stack)
    assert dials_for(stack, call.sid) == 1

    # Live: the replay gets the caller's TwiML again (Twilio retries a slow webhook), no dial.
    again = twilio.post_webhook("/twilio/voice", voice_webhook(call.sid))
    assert again is not None and again.status_code == 200
    stream = ET.fromstring(again.text).find("./Connect/Stream")
    assert stream is not None, again.text
    assert {p.get("name"): p.get("value") for p in stream.iter("Parameter")}["leg"] == "caller"
    assert not call.agent.ended.is_set()

    # Ended: a replay is answered with a goodbye and a hang-up; the agent is not dialled.
    call.agent.hangup()
    wait_active_calls(bridge, 0)
    for _ in range(2):
        replay = twilio.post_webhook("/twilio/voice", voice_webhook(call.sid))
        assert replay is not None and replay.status_code == 200
        root = ET.fromstring(replay.text)
        assert root.find("./Connect") is None and root.find("./Hangup") is not None, replay.text
    # A wrongly admitted call would dial at once (in its set-up thread): give it the time.
    assert not wait_until(lambda: dials_for(stack, call.sid) > 1, 2.0), "dialled again"
    assert bridge.metric("bridge_calls_refused_total", 'reason="replayed"') >= 2
    wait_active_calls(bridge, 0)
