"""Several instances: a stream or a webhook refused on one instance is refused on all.

Two real bridges under gunicorn share a real Redis (see test_cluster.py). A call's legs land on
different instances; an attacker holding the legs' very stream parameters (the worst case: a
captured TwiML) opens a second stream for each leg on the *other* instance, where no leg is
attached locally, and replays the voice webhook to the instance that did not answer it.
"""

from __future__ import annotations

import json
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from bridge.sim.rest import new_sid
from bridge.sim.webhooks import sign
from tests.bridge_process import ACCOUNT_SID, AUTH_TOKEN, BridgeProcess
from tests.call_helpers import (
    BRIDGE_NUMBER,
    CALLER_NUMBER,
    agent_of,
    heard_seconds,
    tone_ulaw,
    wait_streaming,
)
from tests.cluster_calls import Cluster, cluster_stack
from tests.fakes.openai_translate import FakeTranslationServer
from tests.fakes.twilio import DialBehaviour, FakeCall
from tests.redis_server import redis_url

pytestmark = pytest.mark.slow
POLICY_VIOLATION = 1008


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, openai_fake: FakeTranslationServer
) -> Iterator[Cluster]:
    with (
        redis_url() as url,
        cluster_stack(tmp_path_factory.mktemp("hijack"), 2, url, openai_fake) as c,
    ):
        yield c


def eventually(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def second_stream(cluster: Cluster, bridge: BridgeProcess, call: FakeCall) -> tuple[int, int]:
    """Open a stream to ``bridge`` as Twilio would for ``call``'s leg (signed for the public
    URL, the very parameters of its TwiML); the close code it got and how many messages the
    bridge sent it."""
    assert call.stream is not None
    public = cluster.twilio.bridge_url.replace("http://", "ws://") + "/media"
    url = bridge.url.replace("http://", "ws://") + "/media"
    stream_sid = new_sid("MZ")
    start = {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": stream_sid,
        "start": {
            "streamSid": stream_sid,
            "accountSid": ACCOUNT_SID,
            "callSid": call.sid,
            "tracks": ["inbound"],
            "customParameters": dict(call.stream.parameters),
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
    received = 0
    headers = {"X-Twilio-Signature": sign(AUTH_TOKEN, public, {})}
    with connect(url, additional_headers=headers, open_timeout=5, proxy=None) as ws:
        ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        ws.send(json.dumps(start))
        closed = threading.Event()
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                ws.recv(timeout=deadline - time.monotonic())
                received += 1
        except ConnectionClosed:
            closed.set()
        except TimeoutError:
            pass
        assert closed.is_set(), "the bridge did not close the second stream"
        return ws.close_code or 0, received


def test_a_second_stream_on_another_instance_is_refused_and_the_call_goes_on(
    pair: Cluster,
) -> None:
    pair.route({"voice": 0, "stream:caller": 0, "stream:agent": 1, "status": 1, "twiml": 0})
    twilio = pair.twilio
    twilio.default_dial = DialBehaviour(audio=tone_ulaw(30))
    caller = twilio.place_call(tone_ulaw(30), from_=CALLER_NUMBER, to=BRIDGE_NUMBER)
    agent = agent_of(twilio, caller)
    wait_streaming(twilio, caller, agent)
    eventually(lambda: heard_seconds(caller) > 1.0 and heard_seconds(agent) > 1.0, 15, "audio")

    # Each leg's parameters, replayed on the instance that does not hold that leg.
    assert second_stream(pair, pair.bridges[1], caller) == (POLICY_VIOLATION, 0)
    assert second_stream(pair, pair.bridges[0], agent) == (POLICY_VIOLATION, 0)

    # The real legs carry on: both keep hearing translated audio, neither was ended.
    heard = heard_seconds(caller), heard_seconds(agent)
    eventually(
        lambda: heard_seconds(caller) > heard[0] + 1.0 and heard_seconds(agent) > heard[1] + 1.0,
        15,
        "both legs still hear the call",
    )
    assert not caller.ended.is_set() and not agent.ended.is_set()
    assert caller.violations == [] and agent.violations == []
    dials = [r for r in twilio.rest_requests if r.path.endswith("/Calls.json")]

    # The caller hangs up; the voice webhook replayed on the instance that did not answer it
    # is not admitted (the end claim in Redis remembers the call), and nobody is dialled.
    caller.hangup()
    assert agent.wait_ended(10)
    pair.wait_idle()
    voice = next(
        w for w in twilio.webhooks if w.kind == "voice" and w.params["CallSid"] == caller.sid
    )
    for instance in (1, 0):
        pair.route({"voice": instance})
        replay = twilio.post_webhook("/twilio/voice", voice.params, kind="voice")
        assert replay is not None and replay.status_code == 200
        root = ET.fromstring(replay.text)
        assert root.find("./Connect") is None and root.find("./Hangup") is not None, replay.text
    # A wrongly admitted call would dial at once (in its set-up thread): give it the time.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert [r for r in twilio.rest_requests if r.path.endswith("/Calls.json")] == dials
        time.sleep(0.1)
    pair.wait_idle()
