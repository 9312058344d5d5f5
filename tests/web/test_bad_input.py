"""Bad input at the bridge's two doors: the Media Stream socket and the Twilio webhooks.

The real bridge runs under gunicorn (relay engine) with the Twilio stand-in on loopback. Each
malformed Media Stream message has a defined answer: it is counted in
``bridge_bad_media_messages_total{kind}`` and ignored (the stream goes on), or the socket is
closed with a defined code (1009 too big, 1008 not a stream of ours / too much garbage). Every
test ends with the same worker process still serving ``/healthz``: nothing a peer sends may
crash it. Seeded fuzzing (``random.Random(1234)``) throws a few thousand malformed messages and a
few hundred malformed HTTP requests at it while a healthy call keeps flowing.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import re
import string
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from bridge.sim.rest import new_sid
from bridge.sim.webhooks import sign
from tests.bridge_process import (
    ACCOUNT_SID,
    AGENT_NUMBER,
    AUTH_TOKEN,
    BridgeProcess,
    free_port,
    run_bridge,
)
from tests.fakes.audio import ulaw_silence
from tests.fakes.twilio import FakeCall, FakeTwilio

pytestmark = pytest.mark.slow
CALLER_NUMBER = "+34911222333"
BRIDGE_NUMBER = "+15550002222"
FOREIGN_STREAM = "MZ" + "e" * 32
MAX_MESSAGE_CHARS = 16 * 1024  # the bridge's bound on one Media Stream text message
MAX_PAYLOAD_BYTES = 1280  # the bridge's bound on one decoded media payload (8 x 20 ms)
BAD_MESSAGE_LIMIT = 500
START_TIMEOUT_S = 5.0
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
WAIT_S = 10.0
# μ-law bytes that survive the relay's μ-law → PCM16 → μ-law round trip unchanged and are not
# silence (0xFF is silence; 0x7F, the other zero, comes back as 0xFF).
AUDIBLE = bytes(b for b in range(256) if b not in (0x7F, 0xFF))
HANDLER_FAILED = "media stream handler failed"


# -- the stack ------------------------------------------------------------------------------


@dataclass
class Stack:
    bridge: BridgeProcess
    twilio: FakeTwilio
    worker_pid: int


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    port = free_port()
    with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, f"http://127.0.0.1:{port}") as twilio:
        env = {"ENGINE": "relay", "TWILIO_API_BASE_URL": twilio.rest_base_url}
        with run_bridge(port, env, tmp_path_factory.mktemp("bad-input")) as bridge:
            yield Stack(bridge, twilio, bridge.worker_pid())


def assert_healthy(stack: Stack) -> None:
    """The same worker process is alive and serving: nothing crashed or was restarted."""
    bridge = stack.bridge
    assert bridge.proc.poll() is None, f"gunicorn exited:\n{bridge.log()[-3000:]}"
    assert requests.get(f"{bridge.url}/healthz", timeout=5).status_code == 200
    assert bridge.worker_pid() == stack.worker_pid, "the worker was replaced (it crashed)"


@pytest.fixture(autouse=True)
def healthy_after(stack: Stack) -> Iterator[None]:
    yield
    assert_healthy(stack)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return predicate()
        time.sleep(interval)
    return True


def bad_counts(bridge: BridgeProcess) -> Counter[str]:
    """``bridge_bad_media_messages_total`` by kind."""
    text = requests.get(f"{bridge.url}/metrics", timeout=5).text
    pattern = r'^bridge_bad_media_messages_total\{kind="([^"]+)"\} (\S+)$'
    return Counter({m[1]: int(float(m[2])) for m in re.finditer(pattern, text, re.MULTILINE)})


def expect_bad_counts(
    bridge: BridgeProcess, before: Counter[str], expected: Mapping[str, int]
) -> None:
    """Wait until exactly ``expected`` more bad messages (by kind) were counted, and no others."""
    wanted = Counter(expected)

    def delta() -> Counter[str]:
        now = bad_counts(bridge)
        return Counter({k: now[k] - before[k] for k in now if now[k] != before[k]})

    wait_until(lambda: delta() == wanted, WAIT_S, interval=0.05)
    assert delta() == wanted


def handler_failures(bridge: BridgeProcess) -> int:
    return bridge.log().count(HANDLER_FAILED)


def wait_active_calls(bridge: BridgeProcess, count: int, timeout: float = 15.0) -> None:
    assert wait_until(
        lambda: bridge.metric("bridge_active_calls") == count, timeout, interval=0.1
    ), f"bridge_active_calls is {bridge.metric('bridge_active_calls')}, expected {count}"


# -- Media Stream peers ---------------------------------------------------------------------


class Peer:
    """One Media Stream socket opened as Twilio opens it (signed upgrade to ``/media``).

    A reader thread drains what the bridge sends and records how the socket ended, so the test
    thread can keep sending and ask at any time whether the server closed it, and with what code.
    """

    def __init__(self, bridge: BridgeProcess, *, compression: str | None = None) -> None:
        url = bridge.url.replace("http://", "ws://") + "/media"
        self.ws: ClientConnection = connect(
            url,
            additional_headers={"X-Twilio-Signature": sign(AUTH_TOKEN, url, {})},
            open_timeout=5,
            close_timeout=2,
            ping_interval=None,
            compression=compression,
            proxy=None,
        )
        self.stream_sid = new_sid("MZ")
        self.opened_at = time.monotonic()
        self.received = 0
        self.close_code: int | None = None
        self.closed_at: float | None = None
        self.closed_by_us = False
        self.closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name="bad-input-peer", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                self.ws.recv()
                self.received += 1
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd is not None else None
        finally:
            self.closed_at = time.monotonic()
            self.closed.set()

    @property
    def open(self) -> bool:
        return not self.closed.is_set()

    def send(self, data: str | bytes | Iterable[str], *, text: bool | None = None) -> bool:
        """Send one message; False if the socket is already closed."""
        try:
            self.ws.send(data, text=text)
        except ConnectionClosed:
            return False
        return True

    def send_json(self, message: Mapping[str, Any]) -> bool:
        return self.send(json.dumps(message))

    def media(self, payload: bytes, stream_sid: str | None = None) -> bool:
        return self.send_json(media_message(stream_sid or self.stream_sid, payload))

    def wait_closed(self, timeout: float = WAIT_S) -> int | None:
        """The close code the server sent; fails if the socket is still open after ``timeout``."""
        assert self.closed.wait(timeout), "the server did not close the socket"
        return self.close_code

    def close(self) -> None:
        if self.open:
            self.closed_by_us = True
        self.ws.close()
        self._reader.join(5)


CONNECTED: dict[str, Any] = {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def media_message(stream_sid: str, payload: bytes | str, **extra: Any) -> dict[str, Any]:
    body = {
        "track": "inbound",
        "chunk": "1",
        "timestamp": "20",
        "payload": payload if isinstance(payload, str) else b64(payload),
        **extra,
    }
    return {"event": "media", "sequenceNumber": "2", "streamSid": stream_sid, "media": body}


def start_message(
    stream_sid: str,
    call_sid: str,
    *,
    params: Mapping[str, str] | None = None,
    account_sid: str = ACCOUNT_SID,
    media_format: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": stream_sid,
        "start": {
            "streamSid": stream_sid,
            "accountSid": account_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": dict(
                params if params is not None else {"bridgeCallSid": call_sid, "leg": "caller"}
            ),
            "mediaFormat": dict(
                media_format or {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
            ),
        },
    }


def mark_message(stream_sid: str, name: str = "m1") -> dict[str, Any]:
    return {"event": "mark", "sequenceNumber": "3", "streamSid": stream_sid, "mark": {"name": name}}


def stop_message(stream_sid: str, call_sid: str) -> dict[str, Any]:
    return {
        "event": "stop",
        "sequenceNumber": "4",
        "streamSid": stream_sid,
        "stop": {"accountSid": ACCOUNT_SID, "callSid": call_sid},
    }


def dtmf_message(stream_sid: str) -> dict[str, Any]:
    return {
        "event": "dtmf",
        "sequenceNumber": "5",
        "streamSid": stream_sid,
        "dtmf": {"track": "inbound_track", "digit": "5"},
    }


def tone(seed: int, n_bytes: int = 160) -> bytes:
    """A distinctive μ-law chunk that the relay passes to the other leg unchanged."""
    rng = random.Random(seed)
    return bytes(rng.choice(AUDIBLE) for _ in range(n_bytes))


# -- calls ----------------------------------------------------------------------------------


@dataclass
class LiveCall:
    """A call the bridge answered (signed voice webhook); its agent leg is dialled and streaming.
    Nobody is on the caller's stream yet: the test connects it as a :class:`Peer`."""

    sid: str
    agent: FakeCall
    stream_params: dict[str, str] = field(default_factory=dict)


def new_call(stack: Stack) -> LiveCall:
    sid = new_sid("CA")
    params = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": sid,
        "From": CALLER_NUMBER,
        "To": BRIDGE_NUMBER,
        "CallStatus": "ringing",
        "Direction": "inbound",
    }
    response = stack.twilio.post_webhook("/twilio/voice", params, kind="voice")
    assert response is not None and response.status_code == 200, response
    stream = ET.fromstring(response.text).find("./Connect/Stream")
    assert stream is not None, response.text
    assert stream.get("url") == stack.bridge.url.replace("http://", "ws://") + "/media"
    stream_params = {p.get("name", ""): p.get("value", "") for p in stream.iter("Parameter")}
    # The start messages below carry exactly these names; a typo would only test refusals.
    assert stream_params.keys() == {"bridgeCallSid", "leg", "streamToken"}
    assert (stream_params["bridgeCallSid"], stream_params["leg"]) == (sid, "caller")

    def agent() -> FakeCall | None:
        for call in stack.twilio.agent_calls():
            if call.to == AGENT_NUMBER and sid in (call.initial_twiml or ""):
                stream = call.stream
                if stream is not None and stream.media_sent > 0:
                    return call
        return None

    assert wait_until(lambda: agent() is not None, WAIT_S), "the agent leg never streamed"
    found = agent()
    assert found is not None
    return LiveCall(sid, found, stream_params)


def heard(call: FakeCall, chunk: bytes, timeout: float = 5.0) -> bool:
    """Whether ``chunk`` reaches ``call`` (the relay's other leg) within ``timeout``."""
    return wait_until(lambda: chunk in call.heard_ulaw(), timeout)


def start_caller(stack: Stack, call: LiveCall, seed: int) -> Peer:
    """Connect as the call's caller leg (``connected``, ``start``) and prove the stream is live:
    a media frame sent on it reaches the agent."""
    peer = Peer(stack.bridge)
    peer.send_json(CONNECTED)
    peer.send_json(start_message(peer.stream_sid, call.sid, params=call.stream_params))
    chunk = tone(seed)
    peer.media(chunk)
    assert heard(call.agent, chunk), "the caller's stream did not start"
    return peer


def hang_up(stack: Stack, call: LiveCall, peer: Peer) -> None:
    """The caller leaves (socket closed): the bridge ends the call and the agent's leg."""
    peer.close()
    assert call.agent.wait_ended(WAIT_S), "the agent leg was not ended"


# -- ignored messages -----------------------------------------------------------------------


def test_bad_messages_are_counted_and_ignored_and_the_stream_goes_on(stack: Stack) -> None:
    bridge = stack.bridge
    call = new_call(stack)
    before = bad_counts(bridge)
    failures = handler_failures(bridge)
    peer = Peer(bridge)
    assert peer.send_json(CONNECTED)

    # Before `start`.
    sid = peer.stream_sid
    before_start: list[tuple[str | bytes, str]] = [
        (b"\x00\x01\x02 binary", "binary_frame"),
        (b"", "binary_frame"),
        ("not json", "not_json"),
        ("", "not_json"),
        ('{"event": "media", "streamSid": ', "not_json"),
        ("[" * 5000 + "]" * 5000, "not_json"),  # nesting deeper than the JSON parser recurses
        ("x" * MAX_MESSAGE_CHARS, "not_json"),  # exactly at the size bound: parsed, not closed
        ("[1, 2, 3]", "bad_field"),
        ("42", "bad_field"),
        ("null", "bad_field"),
        ('"start"', "bad_field"),
        ("{}", "no_event"),
        ('{"event": 7}', "no_event"),
        ('{"event": null, "streamSid": "MZ1"}', "no_event"),
        ('{"event": "hello"}', "unknown_event"),
        ('{"event": "clear", "streamSid": "MZ1"}', "unknown_event"),
        (json.dumps(media_message(sid, tone(1))), "media_before_start"),
        (json.dumps(mark_message(FOREIGN_STREAM)), "wrong_stream"),
        (json.dumps(stop_message(FOREIGN_STREAM, call.sid)), "wrong_stream"),
        (json.dumps(dtmf_message(FOREIGN_STREAM)), "wrong_stream"),
    ]
    for message, _ in before_start:
        assert peer.send(message)
    expect_bad_counts(bridge, before, Counter(kind for _, kind in before_start))
    assert peer.open

    # A valid start after all that still binds the stream: the agent hears the caller.
    assert peer.send_json(start_message(sid, call.sid, params=call.stream_params))
    first = tone(2)
    assert peer.media(first)
    assert heard(call.agent, first), "the stream did not start after bad messages"

    # After `start`.
    before = bad_counts(bridge)
    after_start: list[tuple[str | bytes, str]] = [
        (json.dumps(media_message(sid, "!!not base64!!")), "bad_base64"),
        (json.dumps(media_message(sid, "AAA")), "bad_base64"),  # bad padding
        (json.dumps(media_message(sid, "AAAA\nAAAA")), "bad_base64"),
        (json.dumps(media_message(sid, "ññññ")), "bad_base64"),  # not even ASCII
        (json.dumps(media_message(sid, b"")), "empty_payload"),
        (json.dumps(media_message(sid, bytes(MAX_PAYLOAD_BYTES + 2))), "payload_too_large"),
        (json.dumps(media_message(sid, bytes(9000))), "payload_too_large"),
        (json.dumps(media_message(FOREIGN_STREAM, tone(3))), "wrong_stream"),
        (json.dumps(mark_message(FOREIGN_STREAM)), "wrong_stream"),
        (json.dumps(dtmf_message(FOREIGN_STREAM)), "wrong_stream"),
        # Someone else's `stop` must not end this call.
        (json.dumps(stop_message(FOREIGN_STREAM, call.sid)), "wrong_stream"),
        (json.dumps(start_message(sid, call.sid, params=call.stream_params)), "duplicate_start"),
        (json.dumps(start_message(FOREIGN_STREAM, new_sid("CA"))), "duplicate_start"),
        (json.dumps({**media_message(sid, tone(4)), "streamSid": None}), "bad_field"),
        (json.dumps({"event": "media", "streamSid": sid, "media": "payload"}), "bad_field"),
        (json.dumps({"event": "media", "streamSid": sid, "media": {"payload": 12}}), "bad_field"),
        (json.dumps({"event": "mark", "streamSid": sid, "mark": {}}), "bad_field"),
        (b"\xff" * 160, "binary_frame"),
        ("{'event': 'media'}", "not_json"),
        ('{"event": "Media"}', "unknown_event"),
    ]
    for message, _ in after_start:
        assert peer.send(message)
    expect_bad_counts(bridge, before, Counter(kind for _, kind in after_start))
    assert peer.open, f"the socket was closed ({peer.close_code})"
    assert not call.agent.ended.is_set(), "a bad message ended the call"

    # "Ignored" means the stream goes on: later good frames reach the agent, including one at
    # the payload bound and the other messages Twilio sends (our own mark and dtmf).
    assert peer.send_json(mark_message(sid))
    assert peer.send_json(dtmf_message(sid))
    for seed, size in ((5, 160), (6, MAX_PAYLOAD_BYTES), (7, 80)):
        chunk = tone(seed, size)
        assert peer.media(chunk)
        assert heard(call.agent, chunk), f"a good {size}-byte frame after bad ones was lost"
    expect_bad_counts(bridge, before, Counter(kind for _, kind in after_start))
    assert peer.open and bridge.metric("bridge_active_calls") >= 1
    assert handler_failures(bridge) == failures
    assert_healthy(stack)

    hang_up(stack, call, peer)
    wait_active_calls(bridge, 0)


def test_payload_one_byte_over_the_bound_is_refused(stack: Stack) -> None:
    call = new_call(stack)
    peer = start_caller(stack, call, seed=10)
    try:
        bridge = stack.bridge
        before = bad_counts(bridge)
        assert peer.media(tone(11, MAX_PAYLOAD_BYTES + 1))
        # Messages are handled in order: once the sentinel is counted, the payload was handled.
        assert peer.send("sentinel")
        assert wait_until(lambda: bad_counts(bridge)["not_json"] > before["not_json"], WAIT_S)
        assert bad_counts(bridge) - before == Counter({"payload_too_large": 1, "not_json": 1})
    finally:
        hang_up(stack, call, peer)


@pytest.mark.parametrize("timestamp", ["1e999", "-Infinity"])
def test_media_with_an_infinite_timestamp_does_not_end_the_call(
    stack: Stack, timestamp: str
) -> None:
    call = new_call(stack)
    peer = start_caller(stack, call, seed=20)
    failures = handler_failures(stack.bridge)
    try:
        message = json.dumps(media_message(peer.stream_sid, tone(21)))
        assert peer.send(message.replace('"timestamp": "20"', f'"timestamp": {timestamp}'))
        assert not peer.closed.wait(0.5), f"the socket was closed ({peer.close_code})"
        after = tone(22)
        assert peer.media(after)
        assert heard(call.agent, after, timeout=3.0), "the stream died"
        assert peer.open and not call.agent.ended.is_set()
        assert handler_failures(stack.bridge) == failures
    finally:
        hang_up(stack, call, peer)


def test_start_with_an_infinite_sample_rate_is_refused_not_crashed(stack: Stack) -> None:
    failures = handler_failures(stack.bridge)
    peer = Peer(stack.bridge)
    try:
        peer.send_json(CONNECTED)
        start = json.dumps(start_message(peer.stream_sid, new_sid("CA")))
        assert peer.send(start.replace('"sampleRate": 8000', '"sampleRate": 1e999'))
        # Refused at once (unsupported format) or ignored (then refused at the start deadline):
        # either way never a crash of the handler.
        peer.closed.wait(2.0)
        assert peer.open or peer.close_code == POLICY_VIOLATION, peer.close_code
        assert handler_failures(stack.bridge) == failures
    finally:
        peer.close()


# -- closed sockets -------------------------------------------------------------------------


def test_oversized_message_closes_the_socket_1009(stack: Stack) -> None:
    bridge = stack.bridge
    # Before start: one character over the bound.
    peer = Peer(bridge)
    peer.send_json(CONNECTED)
    peer.send("x" * (MAX_MESSAGE_CHARS + 1))
    assert peer.wait_closed() == MESSAGE_TOO_BIG
    assert_healthy(stack)

    # A deflate bomb (compression negotiated): 16 MiB of text that compresses to ~16 KiB is
    # refused after the first few KiB of it, without inflating it all.
    peer = Peer(bridge, compression="deflate")
    peer.send("a" * (16 * 1024 * 1024))
    assert peer.wait_closed() == MESSAGE_TOO_BIG
    assert_healthy(stack)

    # A fragmented message whose fragments add up to more than the bound.
    peer = Peer(bridge)
    peer.send(iter(["[" + "0," * 3000] * 3))
    assert peer.wait_closed() == MESSAGE_TOO_BIG
    assert_healthy(stack)

    # After a valid start: the socket is closed the same way and the call ends.
    call = new_call(stack)
    peer = start_caller(stack, call, seed=30)
    peer.send(json.dumps(media_message(peer.stream_sid, "A" * (MAX_MESSAGE_CHARS + 1))))
    assert peer.wait_closed() == MESSAGE_TOO_BIG
    assert call.agent.wait_ended(WAIT_S), "the call outlived its caller's stream"
    peer.close()
    wait_active_calls(bridge, 0)


def test_invalid_utf8_text_frame_closes_the_socket(stack: Stack) -> None:
    peer = Peer(stack.bridge)
    peer.send_json(CONNECTED)
    peer.send(b'{"event": "\xff\xfe"}', text=True)
    # 1007 (invalid frame payload data) from the WebSocket layer; simple-websocket's reader
    # thread and our handler's own close race to the socket, and when the handler wins the
    # TCP close arrives without the close frame. Either way the socket is closed at once.
    assert peer.wait_closed() in (1007, None)
    assert_healthy(stack)


def test_start_that_is_not_for_a_live_call_of_ours_is_refused_1008(stack: Stack) -> None:
    bridge = stack.bridge
    call = new_call(stack)
    other = new_sid("CA")
    ours = call.stream_params
    starts: dict[str, Callable[[str], dict[str, Any]]] = {
        "unknown callSid": lambda s: start_message(s, other),
        "unknown callSid naming our call": lambda s: start_message(s, other, params=ours),
        "wrong accountSid": lambda s: start_message(
            s, call.sid, params=ours, account_sid="AC" + "0" * 32
        ),
        "bridgeCallSid of another call": lambda s: start_message(
            s, call.sid, params={"bridgeCallSid": other, "leg": "caller"}
        ),
        "leg says agent": lambda s: start_message(
            s, call.sid, params={"bridgeCallSid": call.sid, "leg": "agent"}
        ),
        "no leg": lambda s: start_message(s, call.sid, params={"bridgeCallSid": call.sid}),
        "no customParameters": lambda s: start_message(s, call.sid, params={}),
        "the agent's callSid as the caller": lambda s: start_message(
            s, call.agent.sid, params=ours
        ),
        "a second stream for the agent leg": lambda s: start_message(
            s, call.agent.sid, params={"bridgeCallSid": call.sid, "leg": "agent"}
        ),
        "16 kHz audio": lambda s: start_message(
            s,
            call.sid,
            params=ours,
            media_format={"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1},
        ),
        "linear PCM": lambda s: start_message(
            s,
            call.sid,
            params=ours,
            media_format={"encoding": "audio/l16", "sampleRate": 8000, "channels": 1},
        ),
        "stereo": lambda s: start_message(
            s,
            call.sid,
            params=ours,
            media_format={"encoding": "audio/x-mulaw", "sampleRate": "8000", "channels": "2"},
        ),
    }
    before = bad_counts(bridge)
    for name, build in starts.items():
        peer = Peer(bridge)
        peer.send_json(CONNECTED)
        peer.send_json(build(peer.stream_sid))
        assert peer.wait_closed() == POLICY_VIOLATION, name
        assert_healthy(stack)
    expect_bad_counts(bridge, before, {"rejected_stream": len(starts)})
    assert not call.agent.ended.is_set(), "a refused stream ended the call it named"

    # The call itself was not disturbed: its real caller stream still binds…
    peer = start_caller(stack, call, seed=40)
    # …and once it has, a second socket claiming the same leg is refused, the first goes on.
    intruder = Peer(bridge)
    intruder.send_json(CONNECTED)
    intruder.send_json(start_message(intruder.stream_sid, call.sid, params=ours))
    assert intruder.wait_closed() == POLICY_VIOLATION
    chunk = tone(41)
    assert peer.media(chunk) and heard(call.agent, chunk)
    hang_up(stack, call, peer)

    # A call that has ended is no longer ours either.
    wait_active_calls(bridge, 0)
    late = Peer(bridge)
    late.send_json(CONNECTED)
    late.send_json(start_message(late.stream_sid, call.sid, params=ours))
    assert late.wait_closed() == POLICY_VIOLATION


def test_no_start_within_5_s_is_refused_1008(stack: Stack) -> None:
    bridge = stack.bridge
    before = bad_counts(bridge)
    silent = Peer(bridge)
    greeted = Peer(bridge)
    greeted.send_json(CONNECTED)
    garbage = Peer(bridge)
    for _ in range(10):
        garbage.send("junk")
    for peer in (silent, greeted, garbage):
        assert peer.wait_closed(START_TIMEOUT_S + 3) == POLICY_VIOLATION
        assert peer.closed_at is not None
        took = peer.closed_at - peer.opened_at
        assert START_TIMEOUT_S - 0.5 <= took <= START_TIMEOUT_S + 2.0, took
    expect_bad_counts(bridge, before, {"not_json": 10, "rejected_stream": 3})


def test_start_deadline_holds_while_the_peer_keeps_talking(stack: Stack) -> None:
    peer = Peer(stack.bridge)
    try:
        # Checked every second, the deadline closes a compliant socket within about 6 s.
        deadline = peer.opened_at + START_TIMEOUT_S + 1.5
        while peer.open and time.monotonic() < deadline:
            peer.send_json(CONNECTED)
            time.sleep(0.3)
        assert peer.wait_closed(0.5) == POLICY_VIOLATION
    finally:
        peer.close()


BAD_CYCLE: list[tuple[str | bytes, str]] = [
    (b"\x00", "binary_frame"),
    ("nope", "not_json"),
    ("[]", "bad_field"),
    ("{}", "no_event"),
    ('{"event": "bogus"}', "unknown_event"),
]


def send_bad(peer: Peer, n: int) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for i in range(n):
        message, kind = BAD_CYCLE[i % len(BAD_CYCLE)]
        assert peer.send(message)
        kinds[kind] += 1
    return kinds


def test_more_than_500_bad_messages_before_start_are_refused_1008(stack: Stack) -> None:
    bridge = stack.bridge
    before = bad_counts(bridge)
    peer = Peer(bridge)
    peer.send_json(CONNECTED)
    kinds = send_bad(peer, BAD_MESSAGE_LIMIT)
    expect_bad_counts(bridge, before, kinds)
    assert peer.open, "closed at the limit rather than past it"
    assert peer.send("one too many")
    assert peer.wait_closed() == POLICY_VIOLATION
    expect_bad_counts(bridge, before, kinds + Counter({"not_json": 1, "rejected_stream": 1}))


def test_more_than_500_bad_messages_after_start_end_the_call(stack: Stack) -> None:
    bridge = stack.bridge
    rejected = bridge.metric("bridge_calls_ended_total", 'reason="stream_rejected"')
    call = new_call(stack)
    peer = start_caller(stack, call, seed=50)
    before = bad_counts(bridge)
    kinds = send_bad(peer, BAD_MESSAGE_LIMIT)
    expect_bad_counts(bridge, before, kinds)
    chunk = tone(51)
    assert peer.media(chunk) and heard(call.agent, chunk), "the stream stopped at the limit"
    assert peer.open and not call.agent.ended.is_set()

    assert peer.send("one too many")
    assert peer.wait_closed() == POLICY_VIOLATION
    assert call.agent.wait_ended(WAIT_S), "the misbehaving stream's call was not ended"
    assert wait_until(
        lambda: (
            bridge.metric("bridge_calls_ended_total", 'reason="stream_rejected"') == rejected + 1
        ),
        WAIT_S,
        interval=0.1,
    )
    expect_bad_counts(bridge, before, kinds + Counter({"not_json": 1, "rejected_stream": 1}))
    peer.close()
    wait_active_calls(bridge, 0)


# -- Media Stream fuzz ----------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text inserted verbatim (numbers Python's json would not write, deep nesting…)."""

    text: str


@dataclass(frozen=True)
class Frame:
    kind: str  # text | binary | bad_utf8 | fragments | ping
    data: str | bytes | list[str]


HUGE_NUMBERS = [
    "1e999",
    "-1e999",
    "Infinity",
    "-Infinity",
    "NaN",
    "1e308",
    "-0",
    "1e-999",
    "9" * 4000,
    "9" * 5000,  # more digits than Python's int parser takes
    "123456789012345678901234567890",
    "0.0000000000000000000000001",
]
EVENTS = ["connected", "start", "media", "mark", "stop", "dtmf", "clear", "Media", "", "stopp"]


def dump(value: object) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        items = (json.dumps(str(k)) + ":" + dump(v) for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


def random_text(rng: random.Random, n: int) -> str:
    chars = []
    for _ in range(n):
        cp = rng.choice([rng.randrange(32, 127), rng.randrange(0, 0x800), rng.randrange(0x10FFFF)])
        if 0xD800 <= cp <= 0xDFFF:
            cp = 0xFFFD
        chars.append(chr(cp))
    return "".join(chars)


def junk(rng: random.Random, depth: int = 0) -> object:
    pick = rng.randrange(14 if depth < 3 else 8)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.randint(-(2**70), 2**70)
    if pick == 3:
        return Raw(rng.choice(HUGE_NUMBERS))
    if pick == 4:
        return rng.uniform(-1e308, 1e308)
    if pick == 5:
        return random_text(rng, rng.randrange(40))
    if pick == 6:
        return rng.choice(["", " ", "\x00", "inbound", "audio/x-mulaw", "8000", "MZ", "CA"])
    if pick == 7:
        return b64(rng.randbytes(rng.randrange(0, 1600)))
    if pick == 8:
        return [junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    if pick == 9:
        return {random_text(rng, 5): junk(rng, depth + 1) for _ in range(rng.randrange(4))}
    if pick == 10:
        n = rng.randrange(10, 3000)
        return Raw("[" * n + "]" * n)
    if pick == 11:
        return "x" * rng.randrange(1000, 5000)
    if pick == 12:
        return {"payload": junk(rng, depth + 1), "streamSid": junk(rng, depth + 1)}
    return rng.randbytes(8).hex()


def template(rng: random.Random, stream_sid: str, call_sid: str, pre: bool) -> dict[str, Any]:
    event = rng.choices(
        ["media", "start", "mark", "connected", "dtmf", "stop", "other"],
        weights=[40, 5 if pre else 12, 10, 8, 8, 3, 8],
    )[0]
    if event == "media":
        payload = rng.randbytes(rng.choice([0, 1, 80, 160, 160, 320, 1280, 1281, 1500]))
        return media_message(stream_sid, payload)
    if event == "start":
        return start_message(stream_sid, call_sid)
    if event == "mark":
        return mark_message(stream_sid, random_text(rng, 6))
    if event == "connected":
        return dict(CONNECTED)
    if event == "dtmf":
        return dtmf_message(stream_sid)
    if event == "stop":
        return stop_message(stream_sid, call_sid)
    return {"event": rng.choice(EVENTS), "streamSid": stream_sid}


def containers(value: object) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        found: list[dict[str, Any]] = [value]
        for v in value.values():
            found += containers(v)
        return found
    return []


def mutate(rng: random.Random, message: dict[str, Any]) -> dict[str, Any]:
    for _ in range(rng.randint(1, 3)):
        target = rng.choice(containers(message))
        keys = list(target)
        action = rng.randrange(5)
        if action == 0 and keys:
            target[rng.choice(keys)] = junk(rng)
        elif action == 1 and keys:
            del target[rng.choice(keys)]
        elif action == 2:
            target[rng.choice([random_text(rng, 4), "event", "streamSid", "payload"])] = junk(rng)
        elif action == 3:
            message["event"] = rng.choice([*EVENTS, junk(rng)])
        elif keys:
            key = rng.choice(keys)
            target[key.upper() if rng.random() < 0.5 else f" {key}"] = target.pop(key)
    return message


def fuzz_frame(rng: random.Random, stream_sid: str, call_sid: str, pre: bool) -> Frame:
    # Keep our own streamSid half the time, so mutations also reach the post-start paths.
    sid = stream_sid if rng.random() < 0.5 else rng.choice([FOREIGN_STREAM, "", new_sid("MZ")])
    r = rng.random()
    if r < 0.08:
        return Frame("binary", rng.randbytes(rng.randrange(300)))
    if r < 0.16:
        return Frame("text", random_text(rng, rng.randrange(200)))
    if r < 0.20:
        alphabet = string.printable
        return Frame("text", "".join(rng.choice(alphabet) for _ in range(rng.randrange(100))))
    if r < 0.30:
        text = dump(template(rng, sid, call_sid, pre))
        return Frame("text", text[: rng.randrange(len(text))])
    if r < 0.75:
        return Frame("text", dump(mutate(rng, template(rng, sid, call_sid, pre))))
    if r < 0.88:
        message = template(rng, sid, call_sid, pre)
        if message["event"] == "stop" and rng.random() < 0.7:
            message["streamSid"] = FOREIGN_STREAM
        return Frame("text", dump(message))
    if r < 0.92:
        return Frame("text", dump(junk(rng)))
    if r < 0.96:
        text = dump(template(rng, sid, call_sid, pre))
        text = rng.choice(
            [
                "\ufeff" + text,
                " \n\t" + text + " \n",
                text + text,
                text + "garbage",
                text.replace('"event"', '"event":"x","event"', 1),
                text.replace(":", ": ", 1).replace('"', "'", 2),
            ]
        )
        return Frame("text", text)
    if r < 0.97:
        return Frame("text", "x" * rng.randrange(MAX_MESSAGE_CHARS + 1, 40000))
    if r < 0.975:
        return Frame("bad_utf8", b'{"event": "' + rng.randbytes(8) + b'\xff"}')
    if r < 0.99:
        text = dump(template(rng, sid, call_sid, pre))
        cuts = sorted(rng.sample(range(1, len(text)), min(3, len(text) - 1)))
        bounds = itertools.pairwise([0, *cuts, len(text)])
        return Frame("fragments", [text[a:b] for a, b in bounds])
    return Frame("ping", rng.randbytes(rng.randrange(126)))


def send_frame(peer: Peer, frame: Frame) -> bool:
    try:
        if frame.kind == "ping":
            assert isinstance(frame.data, bytes)
            peer.ws.ping(frame.data)
            return True
        if frame.kind == "bad_utf8":
            assert isinstance(frame.data, bytes)
            return peer.send(frame.data, text=True)
        if frame.kind == "fragments":
            assert isinstance(frame.data, list)
            return peer.send(iter(frame.data))
        assert isinstance(frame.data, str | bytes)
        return peer.send(frame.data)
    except ConnectionClosed:
        return False


@dataclass
class FuzzStats:
    messages: int = 0
    by_frame: Counter[str] = field(default_factory=Counter)
    sockets: Counter[str] = field(default_factory=Counter)
    server_closes: Counter[str] = field(default_factory=Counter)


def fuzz_media_streams(stack: Stack, rng: random.Random, total: int) -> FuzzStats:
    stats = FuzzStats()
    pre = True
    while stats.messages < total:
        budget = min(total - stats.messages, rng.randint(20, 700))
        mode = "before_start" if pre else "after_start"
        if pre:
            peer = Peer(stack.bridge, compression=rng.choice([None, "deflate"]))
            call_sid = new_sid("CA")  # a call that does not exist
            if rng.random() < 0.8:
                peer.send_json(CONNECTED)
        else:
            call = new_call(stack)
            peer = start_caller(stack, call, seed=rng.randrange(10**9))
            call_sid = call.sid
        stats.sockets[mode] += 1
        # Each socket's messages come from their own generator, so where the server happens to
        # close a socket does not change what the following sockets are sent.
        local = random.Random(rng.randrange(2**32))
        for _ in range(budget):
            if not peer.open:
                break
            frame = fuzz_frame(local, peer.stream_sid, call_sid, pre)
            stats.messages += 1
            stats.by_frame[f"{mode}:{frame.kind}"] += 1
            if not send_frame(peer, frame):
                break
        # Let the server catch up, so a close it is about to send is seen as its own.
        peer.closed.wait(0.2)
        if not peer.open:
            stats.server_closes[f"{mode}:{peer.close_code}"] += 1
        peer.close()
        pre = not pre
    return stats


def log_exception_types(bridge: BridgeProcess) -> Counter[str]:
    """Exception types of the tracebacks in the bridge's log."""
    pattern = r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))(?::|$)"
    return Counter(m[1] for m in re.finditer(pattern, bridge.log(), re.MULTILINE))


# No exception may reach the log: every malformed input has a defined, quiet response.
KNOWN_FAULTS: set[str] = set()


def test_fuzzed_media_streams_do_not_disturb_a_healthy_call(
    stack: Stack, record_property: Callable[[str, object], None]
) -> None:
    bridge, twilio = stack.bridge, stack.twilio
    began = time.monotonic()
    voice = random.Random(4321)
    caller_audio = ulaw_silence(4000) + bytes(voice.choice(AUDIBLE) for _ in range(8000 * 60))
    caller = twilio.place_call(caller_audio, from_=CALLER_NUMBER, to=BRIDGE_NUMBER)

    def healthy_agent() -> FakeCall | None:
        for call in twilio.agent_calls():
            if caller.sid in (call.initial_twiml or ""):
                return call
        return None

    assert wait_until(lambda: healthy_agent() is not None, WAIT_S)
    agent = healthy_agent()
    assert agent is not None
    assert wait_until(lambda: len(agent.heard_ulaw()) > 8000, WAIT_S), "the call never flowed"
    heard_before = len(agent.heard_ulaw())
    fuzz_start = time.monotonic()

    stats = fuzz_media_streams(stack, random.Random(1234), total=3000)

    fuzz_end = time.monotonic()
    time.sleep(1.0)
    after = agent.heard_ulaw()
    # The healthy call kept flowing in real time through the fuzz, and what the agent hears
    # now is still the caller's audio, unchanged.
    elapsed = time.monotonic() - fuzz_start
    grew = len(after) - heard_before
    assert grew >= 8000 * 0.8 * elapsed, (grew, elapsed)
    # Every byte heard since the fuzz began is the caller's audio, in order: nothing lost,
    # nothing injected from the fuzzing sockets.
    assert after[heard_before:] in caller_audio, "the agent heard something else"
    frames = [f.time for f in agent.heard_frames if fuzz_start <= f.time <= fuzz_end]
    gaps = [b - a for a, b in itertools.pairwise(frames)]
    assert not caller.stream_closed_by_server.is_set() and not caller.ended.is_set()
    assert_healthy(stack)

    # …and it ends normally when the caller hangs up.
    wait_active_calls(bridge, 1)  # every fuzzing call is over; the healthy one is not
    caller.hangup()
    assert agent.wait_ended(WAIT_S) and caller.wait_ended(WAIT_S)
    assert caller.violations == [] and agent.violations == []
    wait_active_calls(bridge, 0)
    assert f"call={caller.sid} call: ending: caller_hung_up" in bridge.log()

    faults = log_exception_types(bridge)
    assert set(faults) <= KNOWN_FAULTS, faults
    summary = (
        f"{stats.messages} messages over {sum(stats.sockets.values())} sockets "
        f"{dict(stats.sockets)}; frames {dict(sorted(stats.by_frame.items()))}; "
        f"server closes {dict(sorted(stats.server_closes.items()))}; "
        f"handler faults {dict(faults)}; healthy call max frame gap "
        f"{1000 * max(gaps, default=0):.0f} ms; {time.monotonic() - began:.1f} s"
    )
    print(f"\nmedia fuzz: {summary}")
    record_property("media_fuzz", summary)


# -- webhooks -------------------------------------------------------------------------------


def test_webhook_directed_cases(stack: Stack) -> None:
    bridge, twilio = stack.bridge, stack.twilio
    params = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": new_sid("CA"),
        "From": CALLER_NUMBER,
        "To": BRIDGE_NUMBER,
        "CallStatus": "ringing",
        "Direction": "inbound",
    }

    def status(path: str, form: Mapping[str, str], **kwargs: Any) -> int | None:
        response = twilio.post_webhook(path, form, **kwargs)
        return None if response is None else response.status_code

    for path in ("/twilio/voice", "/twilio/status"):
        assert status(path, params, signature="bad") == 403
        assert status(path, params, signature="none") == 403
        assert status(path, params, signature="not base64 at all") == 403
        no_sid = {k: v for k, v in params.items() if k != "CallSid"}
        assert status(path, no_sid) == 400
        assert status(path, {**params, "CallSid": "  "}) == 400
        assert status(path, params, method="GET") == 405
    assert status("/twilio/voice", {k: v for k, v in params.items() if k != "From"}) == 400
    assert status("/twilio/voice", {**params, "AccountSid": "AC" + "0" * 32}) == 403
    assert status("/twilio/status", {**params, "CallStatus": "completed"}) == 204  # not ours
    assert status("/twilio/status", {**params, "CallStatus": "in-progress"}) == 204
    assert status("/twilio/nowhere", params) == 404
    big = {**params, "Pad": "x" * (70 * 1024)}
    assert status("/twilio/voice", big) == 413
    media = f"{bridge.url}/media"
    signed = {"X-Twilio-Signature": sign(AUTH_TOKEN, media.replace("http", "ws", 1), {})}
    assert requests.get(media, headers=signed, timeout=5).status_code == 400  # no upgrade
    assert requests.get(media, timeout=5).status_code == 403
    assert requests.post(media, headers=signed, timeout=5).status_code == 405
    assert bridge.metric("bridge_active_calls") == 0


def test_chunked_webhook_body_over_64_kib_is_refused(stack: Stack) -> None:
    """A chunked body has no Content-Length; the 64 KiB bound must hold while reading it.

    Unsigned, it is refused before a byte of it is read. Carrying a signature, the form is
    read to check it, but no further than 64 KiB (Werkzeug's MAX_CONTENT_LENGTH on a
    terminated stream): a 1 MiB body cannot be signed for, so it is refused too.
    """

    def body() -> Iterator[bytes]:
        for _ in range(16):
            yield b"Pad=" + b"x" * 65536 + b"&"

    url = f"{stack.bridge.url}/twilio/voice"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    unsigned = requests.post(url, data=body(), headers=form, timeout=10)
    assert unsigned.status_code == 403
    signed = {**form, "X-Twilio-Signature": sign(AUTH_TOKEN, url, {"Pad": "x" * 65536})}
    response = requests.post(url, data=body(), headers=signed, timeout=10)
    assert response.status_code in (403, 413)
    assert stack.bridge.metric("bridge_active_calls") == 0


FORM_FIELDS = ["CallSid", "From", "To", "AccountSid", "CallStatus", "Direction", "ApiVersion"]
CONTENT_TYPES = [
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=latin-1",
    "multipart/form-data",
    "multipart/form-data; boundary=zzz",
    "application/json",
    "text/plain",
    "\x01;;;=",
    "",
]


def random_form(rng: random.Random) -> dict[str, str]:
    form: dict[str, str] = {}
    if rng.random() < 0.4:  # plausible: what Twilio sends, plus junk
        form = {
            "AccountSid": ACCOUNT_SID,
            "CallSid": new_sid("CA"),
            "From": CALLER_NUMBER,
            "To": BRIDGE_NUMBER,
            "CallStatus": rng.choice(["ringing", "completed", "in-progress", "no-answer"]),
        }
    for name in rng.sample(FORM_FIELDS, rng.randrange(len(FORM_FIELDS) + 1)):
        form[name] = rng.choice(
            [
                new_sid("CA") if name == "CallSid" else "",
                ACCOUNT_SID if name == "AccountSid" else CALLER_NUMBER,
                rng.choice(["ringing", "completed", "in-progress", "busy", "bogus"]),
                random_text(rng, rng.randrange(30)),
                "x" * rng.randrange(5000),
            ]
        )
    for _ in range(rng.randrange(3)):
        form[random_text(rng, rng.randrange(1, 8))] = random_text(rng, rng.randrange(20))
    return form


def random_path(rng: random.Random) -> str:
    return rng.choice(
        [
            "/twilio/voice",
            "/twilio/voice",
            "/twilio/status",
            "/twilio/status",
            "/media",
            "/healthz",
            "/metrics",
            "/",
            "/twilio/",
            "/twilio/voice/",
            "/twilio/voice?bodySHA256=abc",
            "/media?x=1",
            "/%ff%fe",
            "/twilio/../healthz",
            "/" + "".join(rng.choice(string.ascii_letters + "/-._~%") for _ in range(20)),
        ]
    )


def twilio_shaped_request(rng: random.Random, base: str) -> requests.Request:
    """A form POST to a webhook, mostly signed correctly, with random (often plausible) fields."""
    url = base + rng.choice(["/twilio/voice", "/twilio/status"])
    form = random_form(rng)
    token = AUTH_TOKEN if rng.random() < 0.8 else "wrong-token"
    headers = {"User-Agent": "TwilioProxy/1.1", "X-Twilio-Signature": sign(token, url, form)}
    return requests.Request("POST", url, headers=headers, data=form)


def fuzz_request(rng: random.Random, base: str) -> requests.Request:
    if rng.random() < 0.3:
        return twilio_shaped_request(rng, base)
    method = rng.choice(["POST", "POST", "POST", "GET", "PUT", "DELETE", "PATCH", "HEAD"])
    url = base + random_path(rng)
    headers = {"User-Agent": "TwilioProxy/1.1"}
    form: dict[str, str] | None = None
    data: Any = None
    body = rng.randrange(8)
    if body <= 2:
        form = random_form(rng)
        data = form
    elif body == 3:
        data = rng.randbytes(rng.randrange(2000))  # not UTF-8, not a form
    elif body == 4:
        data = b"CallSid=%ff%fe%zz&From=%&To=" + rng.randbytes(20)
    elif body == 5:
        data = rng.randbytes(rng.randrange(65 * 1024, 200 * 1024))
    elif body == 6:
        chunk = rng.randbytes(16 * 1024)
        data = iter([chunk] * rng.randrange(1, 20))  # chunked: no Content-Length
    if body != 2 or rng.random() < 0.5:
        headers["Content-Type"] = rng.choice(CONTENT_TYPES)
    signature = rng.randrange(4)
    if signature == 0:
        headers["X-Twilio-Signature"] = sign(AUTH_TOKEN, url, form or {})
    elif signature == 1:
        headers["X-Twilio-Signature"] = sign("wrong-token", url, form or {})
    elif signature == 2:
        headers["X-Twilio-Signature"] = "".join(
            rng.choice(string.printable[:94]) for _ in range(28)
        )
    return requests.Request(method, url, headers=headers, data=data)


def test_webhook_fuzz_never_errors(
    stack: Stack, record_property: Callable[[str, object], None]
) -> None:
    bridge, twilio = stack.bridge, stack.twilio
    rng = random.Random(1234)
    statuses: Counter[int] = Counter()
    admitted: list[dict[str, str]] = []
    began = time.monotonic()
    for i in range(300):
        # A fresh connection each time: gunicorn drains at most 64 KiB of a body the app did not
        # read and then closes its keep-alive connection, which a pooled client would trip on.
        request = fuzz_request(rng, bridge.url).prepare()
        request.headers["Connection"] = "close"
        with requests.Session() as session:
            try:
                response = session.send(request, timeout=10, allow_redirects=False)
            except requests.RequestException as exc:
                raise AssertionError(
                    f"request {i} {request.method} {request.url}: {exc!r}"
                ) from exc
        statuses[response.status_code] += 1
        assert response.status_code < 500, (i, request.method, request.url, response.text)
        if response.status_code == 200 and "<Connect>" in response.text:
            # A correctly signed voice webhook: a real call was admitted; end it below.
            sid = ET.fromstring(response.text).find("./Connect/Stream/Parameter")
            assert sid is not None
            admitted.append({"AccountSid": ACCOUNT_SID, "CallSid": sid.get("value", "")})
    assert_healthy(stack)
    # Calls the fuzz admitted end like any call whose caller hangs up before the stream starts.
    for form in admitted:
        ended = twilio.post_webhook("/twilio/status", {**form, "CallStatus": "completed"})
        assert ended is not None and ended.status_code == 204
    wait_active_calls(bridge, 0)
    summary = (
        f"300 requests: statuses {dict(sorted(statuses.items()))}, {len(admitted)} calls "
        f"admitted and ended; {time.monotonic() - began:.1f} s"
    )
    print(f"\nwebhook fuzz: {summary}")
    record_property("webhook_fuzz", summary)
