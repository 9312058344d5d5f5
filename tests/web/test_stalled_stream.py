"""A Twilio peer that stops reading its Media Stream, against the bridge under gunicorn: its leg
ends within the bound, counted and logged once, and another call on the same bridge goes on.

The stand-in (bridge/sim) keeps sending media but takes nothing more off the socket, with a small
receive buffer; the bridge's own send buffer is bounded (bridge/telephony/stream_socket.py), so both
fill within seconds and the bytes then wait ``WRITE_STALL_S``.
"""

from __future__ import annotations

import time

from bridge.telephony.stream_socket import WRITE_STALL_S
from tests.call_helpers import (
    BRIDGE_NUMBER,
    CALLER_NUMBER,
    Stack,
    agent_of,
    wait_call_over,
    wait_streaming,
)
from tests.fakes.audio import ulaw_silence
from tests.fakes.twilio import DialBehaviour, FakeCall

FRAME_S = 0.02
# Buffers fill at Twilio's rate (~17 KB/s): a few seconds, then WRITE_STALL_S, then slack for a
# loaded machine. Not a timing assertion: only a deadline for the leg to end at all.
STALL_DEADLINE_S = 30.0 + WRITE_STALL_S


def heard(call: FakeCall) -> int:
    assert call.stream is not None
    return len(call.stream.heard_frames)


def test_a_stream_that_stops_reading_ends_its_call_and_no_other(relay_stack: Stack) -> None:
    twilio, bridge = relay_stack.twilio, relay_stack.bridge
    # Each party's line (silence, as a phone line sends) is relayed to the other: the bridge
    # writes a frame every 20 ms to every leg.
    twilio.default_dial = DialBehaviour(answer_delay_s=0.1, audio=ulaw_silence(8000))
    line = ulaw_silence(8000 * 60)
    wedged = twilio.place_call(
        line, from_=CALLER_NUMBER, to=BRIDGE_NUMBER, stop_reading_after_s=1.0
    )
    healthy = twilio.place_call(line, from_="+34911222444", to=BRIDGE_NUMBER)
    wedged_agent, healthy_agent = agent_of(twilio, wedged), agent_of(twilio, healthy)
    wait_streaming(twilio, wedged, wedged_agent, healthy, healthy_agent)
    start = time.monotonic()
    counted_from = heard(healthy), heard(healthy_agent)

    assert twilio.wait_for(
        lambda: bridge.metric("bridge_media_write_stalls_total", 'leg="caller"') >= 1,
        STALL_DEADLINE_S,
        interval=0.2,
    ), "the bridge kept a leg whose peer stopped reading"
    stalled_after = time.monotonic() - start
    assert wedged.wait_ended(15), "the wedged party's call was not hung up"
    assert wedged_agent.wait_ended(15)
    assert twilio.wait_for(
        lambda: bridge.metric("bridge_calls_ended_total", 'reason="stream_stalled"') == 1, 10
    )

    # Meanwhile the other call's frames kept coming, to both its parties (a loose share of
    # real time: the machine may be loaded), and keep coming after the wedged call is gone.
    expected = stalled_after / FRAME_S
    got = heard(healthy) - counted_from[0], heard(healthy_agent) - counted_from[1]
    assert min(got) > expected / 2, f"{got} frames in {stalled_after:.1f} s"
    after = heard(healthy), heard(healthy_agent)
    assert twilio.wait_for(
        lambda: heard(healthy) > after[0] + 50 and heard(healthy_agent) > after[1] + 50, 15
    )
    assert not healthy.ended.is_set()
    assert bridge.metric("bridge_media_write_stalls_total", 'leg="caller"') == 1
    assert bridge.metric("bridge_media_write_stalls_total", 'leg="agent"') == 0
    assert bridge.log().count("media socket stopped draining") == 1
    # No thread left behind waiting on the dead peer: only the healthy call's two writers.
    assert twilio.wait_for(lambda: bridge.threads_by_kind().get("leg-writer") == 2, 10)

    healthy.hangup()
    wait_call_over(bridge)
