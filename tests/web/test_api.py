"""The admin API: authorisation, the list and detail JSON, transcript downloads, live events.

Most tests drive the app in-process (Flask's test client) and publish call events on its hub
as the call code does; the last two run whole calls through the real bridge under gunicorn
with the Twilio and OpenAI stand-ins and read the records back over HTTP.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from bridge.app import create_app
from bridge.calls.events import CallEnded, CallStarted, EventHub, SegmentClosed, TextFragment
from bridge.engines.registry import settings_from_env
from bridge.records.store import CallStore
from bridge.web.events_stream import POLL_S
from bridge.web.live import LiveCalls
from tests.bridge_process import AGENT_NUMBER, OPENAI_KEY
from tests.call_events import (
    CALLER,
    T0,
    agent_sid_of,
    call_events,
    follow,
    segments_from_both,
    wait_until,
)
from tests.call_helpers import (
    BRIDGE_NUMBER,
    CALLER_NUMBER,
    LEAD_IN_S,
    agent_of,
    bridge_stack,
    speech,
    wait_call_over,
    wait_streaming,
)
from tests.fakes.audio import AGENT_EN_8K_MULAW, CALLER_ES_8K_MULAW, load_wav, ulaw_silence
from tests.fakes.openai_translate import FakeTranslationServer
from tests.fakes.twilio import DialBehaviour

TOKEN = "admin-token-for-tests-5b1f0c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_app(tmp_path: Path, token: str | None = TOKEN) -> Flask:
    env = {
        "PUBLIC_BASE_URL": "https://bridge.example.com",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "twilio-token",
        "AGENT_NUMBER": AGENT_NUMBER,
        "ENGINE": "relay",
        "DATABASE_URL": f"sqlite:///{tmp_path}/calls.sqlite3",
    }
    if token is not None:
        env["ADMIN_TOKEN"] = token
    return create_app(settings_from_env(env, env_file=None))


def close_app(app: Flask) -> None:
    app.extensions["bridge.web.live"].close()
    app.extensions["bridge.records.store"].close()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path)
    yield app
    close_app(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def hub_of(app: Flask) -> EventHub:
    hub: EventHub = app.extensions["bridge.hub"]
    return hub


def publish(app: Flask, events: list[Any]) -> None:
    for e in events:
        hub_of(app).publish(e)


def stored(app: Flask, sid: str, *, ended: bool = True) -> None:
    """Wait until the store has the call (and its end)."""
    store: CallStore = app.extensions["bridge.records.store"]

    def there() -> bool:
        detail = store.get_call(sid)
        return detail is not None and (detail.summary.ended_at is not None or not ended)

    assert wait_until(there), f"{sid} never reached the store"


def live_has(app: Flask, sid: str) -> None:
    live: LiveCalls = app.extensions["bridge.web.live"]
    assert wait_until(lambda: live.detail(sid) is not None)


# -- authorisation --------------------------------------------------------------------------


def test_disabled_until_admin_token_is_set(tmp_path: Path) -> None:
    app = make_app(tmp_path, token=None)
    try:
        response = app.test_client().get("/api/calls", headers=AUTH)
        assert response.status_code == 503
        assert response.json == {"error": "the API is disabled until ADMIN_TOKEN is set"}
    finally:
        close_app(app)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong-token-of-some-length"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer ñandú-token-not-ascii"},
    ],
)
def test_missing_or_wrong_token_is_401(client: FlaskClient, headers: dict[str, str]) -> None:
    for path in ("/api/calls", "/api/calls/CA01", "/api/calls/CA01/events"):
        response = client.get(path, headers=headers)
        assert response.status_code == 401, path
        assert response.json == {"error": "missing or wrong admin token"}
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="bridge"'


def test_the_console_session_cookie_authorises_and_the_raw_token_does_not(
    client: FlaskClient,
) -> None:
    client.set_cookie("bridge_admin", TOKEN)  # what the cookie held before sessions
    assert client.get("/api/calls").status_code == 401
    assert client.post("/console/login", data={"token": TOKEN}).status_code == 303
    assert client.get("/api/calls").status_code == 200  # the session the login set
    client.set_cookie("bridge_admin", "not-a-session-at-all")
    assert client.get("/api/calls").status_code == 401


def test_settings_refuse_a_short_admin_token() -> None:
    from bridge.settings.env import ConfigError

    env = {
        "PUBLIC_BASE_URL": "https://bridge.example.com",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "t",
        "AGENT_NUMBER": AGENT_NUMBER,
        "ENGINE": "relay",
        "ADMIN_TOKEN": "short",
    }
    with pytest.raises(ConfigError, match="ADMIN_TOKEN: too short"):
        settings_from_env(env, env_file=None)


# -- list and detail ------------------------------------------------------------------------


def test_list_puts_active_calls_first_and_pages_the_rest(app: Flask, client: FlaskClient) -> None:
    for i in range(3):
        publish(app, call_events(f"CA0{i}", at=T0 + timedelta(minutes=i)))
    stored(app, "CA02")
    now = datetime.now(UTC)
    publish(app, [CallStarted("CA99", "+34600000000", BRIDGE_NUMBER, "fr", "en", "relay", now)])
    live_has(app, "CA99")

    body = client.get("/api/calls", headers=AUTH).json
    assert body is not None
    assert [(c["call_sid"], c["active"]) for c in body["calls"]] == [
        ("CA99", True),
        ("CA02", False),
        ("CA01", False),
        ("CA00", False),
    ]
    assert body["next"] is None
    active = body["calls"][0]
    assert active["ended_at"] is None and active["end_reason"] is None
    assert active["caller_language"] == "fr" and active["duration_s"] >= 0

    first = client.get("/api/calls?limit=2", headers=AUTH).json
    assert first is not None
    assert [c["call_sid"] for c in first["calls"]] == ["CA99", "CA02", "CA01"]
    second = client.get(f"/api/calls?limit=2&before={first['next']}", headers=AUTH).json
    assert second is not None
    assert [c["call_sid"] for c in second["calls"]] == ["CA00"]  # no active call on page 2
    assert second["next"] is None


def test_list_filters(app: Flask, client: FlaskClient) -> None:
    publish(app, call_events("CA10", at=T0, reason="agent_busy"))
    publish(app, call_events("CA11", at=T0 + timedelta(days=1), caller="+34600111222"))
    stored(app, "CA11")

    def sids(query: str) -> list[str]:
        response = client.get(f"/api/calls?{query}", headers=AUTH)
        assert response.status_code == 200, response.json
        assert response.json is not None
        return [c["call_sid"] for c in response.json["calls"]]

    assert sids("outcome=agent_busy") == ["CA10"]
    assert sids("number=%2B34600111222") == ["CA11"]
    assert sids("number=+34600111222") == ["CA11"]  # an unencoded + arrives as a space
    assert sids(f"number={CALLER.replace('+', '%2B')}") == ["CA10"]
    assert sids("since=2026-05-02") == ["CA11"]
    assert sids("until=2026-05-01") == ["CA10"]  # a date alone: the whole of that day
    assert sids("since=2026-05-01T10:00:00Z&until=2026-05-01T10:00:01Z") == ["CA10"]
    assert sids("since=2026-05-01T12:00:00+02:00&until=2026-05-01T12:00:01+02:00") == ["CA10"]
    for bad in ("since=yesterday", "limit=0", "limit=201", "limit=x", "before=nope"):
        response = client.get(f"/api/calls?{bad}", headers=AUTH)
        assert response.status_code == 400, bad
        assert response.json is not None and "error" in response.json


def test_detail_by_caller_or_agent_sid(app: Flask, client: FlaskClient) -> None:
    publish(app, call_events("CA20", detail="said goodbye"))
    stored(app, "CA20")
    bodies = []
    for sid in ("CA20", agent_sid_of("CA20")):
        response = client.get(f"/api/calls/{sid}", headers=AUTH)
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"
        bodies.append(response.json)
    body = bodies[0]
    assert body is not None and bodies[1] == body and body["call_sid"] == "CA20"
    assert body["agent_sid"] == agent_sid_of("CA20")
    assert body["end_reason"] == "caller_hung_up" and body["end_detail"] == "said goodbye"
    assert body["started_at"] == "2026-05-01T10:00:00.123Z"
    assert body["answered_at"] == "2026-05-01T10:00:04.123Z"
    assert body["duration_s"] == 70.0
    assert body["delays"] == {"caller_to_agent": 840, "agent_to_caller": 910}
    assert body["segments"][0] == {
        "direction": "caller_to_agent",
        "seq": 1,
        "source_text": "Hola, buenos días.",
        "translated_text": "Hello, good morning.",
        "start_ms": 5000,
        "end_ms": 7200,
        "delay_ms": 840,
    }
    missing = client.get("/api/calls/CAnothing", headers=AUTH)
    assert missing.status_code == 404 and missing.json == {"error": "no such call"}
    assert client.get("/api/calls/CA..%2F..", headers=AUTH).status_code == 404


def test_transcript_as_text_and_webvtt(app: Flask, client: FlaskClient) -> None:
    publish(app, call_events("CA30"))
    stored(app, "CA30")
    txt = client.get(f"/api/calls/{agent_sid_of('CA30')}/transcript.txt", headers=AUTH)
    assert txt.status_code == 200 and txt.mimetype == "text/plain"
    assert txt.headers["Content-Disposition"] == 'attachment; filename="CA30.txt"'
    assert txt.text.splitlines()[1:] == [
        "[00:05] caller_to_agent: Hola, buenos días. → Hello, good morning.",
        "[00:08] agent_to_caller: How can I help? → ¿En qué puedo ayudarle?",
        "[01:01] caller_to_agent: Mi factura <no> llega → My bill --> is late",
    ]
    vtt = client.get("/api/calls/CA30/transcript.vtt", headers=AUTH)
    assert vtt.status_code == 200 and vtt.mimetype == "text/vtt"
    assert vtt.text == (
        "WEBVTT\n\nNOTE call CA30\n\n"
        "caller-1\n00:00:05.000 --> 00:00:07.200\n"
        "<v caller_to_agent>Hello, good morning.</v>\n(Hola, buenos días.)\n\n"
        "agent-1\n00:00:08.000 --> 00:00:09.500\n"
        "<v agent_to_caller>¿En qué puedo ayudarle?</v>\n(How can I help?)\n\n"
        "caller-2\n00:01:01.000 --> 00:01:03.500\n"
        "<v caller_to_agent>My bill --&gt; is late</v>\n(Mi factura &lt;no&gt; llega)\n"
    )


# -- live events ----------------------------------------------------------------------------


def chunks_of(response: Any) -> Iterator[bytes]:
    """What a streamed test-client response yields, write by write."""
    for chunk in response.response:
        yield chunk if isinstance(chunk, bytes) else chunk.encode()


def read_events(chunks: Iterator[bytes], count: int) -> list[tuple[str, Any]]:
    """The next ``count`` events (name and JSON data; comments as ("", text))."""
    events: list[tuple[str, Any]] = []
    while len(events) < count:
        text = next(chunks).decode()
        if text.startswith(":"):
            events.append(("", text))
            continue
        name, data = text.strip().split("\n")
        events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


def test_events_stream_a_live_call(app: Flask, client: FlaskClient) -> None:
    sid = "CA40"
    start, *rest = call_events(sid, at=datetime.now(UTC))
    publish(app, [start, *rest[:2]])  # started, dialled, answered
    live_has(app, sid)
    response = client.get(f"/api/calls/{agent_sid_of(sid)}/events", headers=AUTH, buffered=False)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    chunks = chunks_of(response)
    [(name, snapshot)] = read_events(chunks, 1)
    assert name == "snapshot" and snapshot["call_sid"] == sid and snapshot["active"] is True
    assert snapshot["agent_sid"] == agent_sid_of(sid) and snapshot["segments"] == []

    publish(
        app,
        [
            TextFragment(sid, "caller_to_agent", "source", "Hola", 5000),
            SegmentClosed(sid, "caller_to_agent", 1, "Hola", "Hello", 5000, 5400, 700),
            rest[4],  # DelayMeasured caller_to_agent 840
            CallEnded(sid, datetime.now(UTC), "agent_hung_up", ""),
        ],
    )
    assert read_events(chunks, 4) == [
        ("fragment", {"direction": "caller_to_agent", "kind": "source", "text": "Hola",
                      "offset_ms": 5000}),
        ("segment", {"direction": "caller_to_agent", "seq": 1, "source_text": "Hola",
                     "translated_text": "Hello", "start_ms": 5000, "end_ms": 5400,
                     "delay_ms": 700}),
        ("delay", {"direction": "caller_to_agent", "delay_ms": 840}),
        ("ended", {"reason": "agent_hung_up"}),
    ]  # fmt: skip
    with pytest.raises(StopIteration):
        next(chunks)  # the stream ends with the call
    response.close()
    assert app.extensions["bridge.web.api.streams"].open == 0


def test_events_of_an_ended_call_are_its_record_then_ended(app: Flask, client: FlaskClient) -> None:
    publish(app, call_events("CA41", reason="agent_busy"))
    stored(app, "CA41")
    app.extensions["bridge.web.live"]._calls.clear()  # long gone from the live view
    response = client.get("/api/calls/CA41/events", headers=AUTH, buffered=False)
    events = read_events(chunks_of(response), 2)
    assert [name for name, _ in events] == ["snapshot", "ended"]
    assert events[0][1]["end_reason"] == "agent_busy" and len(events[0][1]["segments"]) == 3
    assert events[1][1] == {"reason": "agent_busy"}
    response.close()
    assert client.get("/api/calls/CAnone/events", headers=AUTH).status_code == 404


def test_events_of_a_call_the_live_view_has_not_caught_up_with(
    app: Flask, client: FlaskClient
) -> None:
    """Asked for the moment it starts, a call may be recorded but not yet in the live view:
    the stream waits for the live view instead of calling a live call ended."""
    sid = "CA43"
    start = call_events(sid, at=datetime.now(UTC), reason=None)[0]
    publish(app, [start])
    stored(app, sid, ended=False)
    live: LiveCalls = app.extensions["bridge.web.live"]
    live._calls.clear()  # the live view's thread has not applied the start yet
    late = threading.Timer(0.3, live.apply, args=(start,))
    late.start()
    response = client.get(f"/api/calls/{sid}/events", headers=AUTH, buffered=False)
    chunks = chunks_of(response)
    [(name, snapshot)] = read_events(chunks, 1)
    assert name == "snapshot" and snapshot["active"] is True
    publish(app, [CallEnded(sid, datetime.now(UTC), "caller_hung_up", "")])
    assert read_events(chunks, 1) == [("ended", {"reason": "caller_hung_up"})]
    response.close()
    late.join()


def test_quiet_streams_get_heartbeats(app: Flask, client: FlaskClient) -> None:
    app.config["BRIDGE_SSE_HEARTBEAT_S"] = 0.2
    publish(app, [CallStarted("CA42", CALLER, BRIDGE_NUMBER, "es", "en", "relay", T0)])
    live_has(app, "CA42")
    response = client.get("/api/calls/CA42/events", headers=AUTH, buffered=False)
    chunks = chunks_of(response)
    started = time.monotonic()
    assert [name for name, _ in read_events(chunks, 2)] == ["snapshot", ""]
    assert 0.15 < time.monotonic() - started < 2
    response.close()


def test_at_most_twenty_streams_and_a_closed_one_frees_its_slot(
    app: Flask, client: FlaskClient
) -> None:
    publish(app, [CallStarted("CA43", CALLER, BRIDGE_NUMBER, "es", "en", "relay", T0)])
    live_has(app, "CA43")
    live: LiveCalls = app.extensions["bridge.web.live"]
    streams = [
        client.get("/api/calls/CA43/events", headers=AUTH, buffered=False) for _ in range(20)
    ]
    assert all(s.status_code == 200 for s in streams)
    refused = client.get("/api/calls/CA43/events", headers=AUTH, buffered=False)
    assert refused.status_code == 503
    assert refused.json == {"error": "too many event streams open (at most 20)"}
    streams.pop().close()  # never read: closing the response still frees its slot and watch
    again = client.get("/api/calls/CA43/events", headers=AUTH, buffered=False)
    assert again.status_code == 200
    for s in [*streams, again]:
        s.close()
    assert app.extensions["bridge.web.api.streams"].open == 0
    assert live._watches == {}


# -- whole calls under gunicorn -------------------------------------------------------------


@pytest.fixture(scope="module")
def records_stack(
    tmp_path_factory: pytest.TempPathFactory, openai_fake: FakeTranslationServer
) -> Iterator[Any]:
    folder = tmp_path_factory.mktemp("api")
    env = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "DATABASE_URL": f"sqlite:///{folder}/calls.sqlite3",
        "ADMIN_TOKEN": TOKEN,
    }
    with bridge_stack(folder, env, openai_fake) as stack:
        yield stack


@pytest.mark.slow
def test_a_real_call_is_recorded_and_streamed(records_stack: Any) -> None:
    twilio, bridge = records_stack.twilio, records_stack.bridge
    api = f"{bridge.url}/api/calls"
    twilio.default_dial = DialBehaviour(audio=speech(AGENT_EN_8K_MULAW, LEAD_IN_S + 0.5))
    caller = twilio.place_call(speech(CALLER_ES_8K_MULAW), from_=CALLER_NUMBER, to=BRIDGE_NUMBER)
    agent = agent_of(twilio, caller)
    wait_streaming(twilio, caller, agent)

    listing = requests.get(api, headers=AUTH, timeout=5).json()
    assert listing["calls"][0]["call_sid"] == caller.sid and listing["calls"][0]["active"]
    events: list[tuple[str, Any]] = []
    opened = threading.Event()
    follower = threading.Thread(
        target=follow, args=(f"{api}/{caller.sid}/events", AUTH, events, opened, 30.0), daemon=True
    )
    follower.start()
    assert opened.wait(5)

    # Both have spoken and a pause closed each one's utterance: the record has both directions.
    caller_speech_s = len(load_wav(CALLER_ES_8K_MULAW)[2]) / 8000
    assert wait_until(lambda: segments_from_both(events), LEAD_IN_S + caller_speech_s + 20), events
    caller.hangup()
    wait_call_over(bridge)
    follower.join(10)
    assert not follower.is_alive(), "the event stream did not end with the call"

    names = [name for name, _ in events]
    assert names[0] == "snapshot" and names[-1] == "ended"
    assert {"fragment", "segment", "delay"} <= set(names), names
    assert events[-1][1] == {"reason": "caller_hung_up"}

    def record() -> dict[str, Any]:
        response = requests.get(f"{api}/{agent.sid}", headers=AUTH, timeout=5)
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    assert wait_until(lambda: record()["ended_at"] is not None and not record()["active"])
    r = record()
    print(json.dumps(r, indent=2, ensure_ascii=False))  # the README's example comes from here
    assert (r["call_sid"], r["agent_sid"]) == (caller.sid, agent.sid)
    assert (r["caller_number"], r["dialled_number"], r["agent_number"]) == (
        CALLER_NUMBER,
        BRIDGE_NUMBER,
        AGENT_NUMBER,
    )
    assert (r["caller_language"], r["agent_language"], r["engine"]) == ("es", "en", "openai")
    assert r["end_reason"] == "caller_hung_up"
    started, ended = (datetime.fromisoformat(r[k]) for k in ("started_at", "ended_at"))
    assert started <= ended and 5 < r["duration_s"] < 60
    if r["answered_at"] is not None:  # the stand-in reports in-progress when it answers
        assert started <= datetime.fromisoformat(r["answered_at"]) <= ended
    directions = {s["direction"] for s in r["segments"]}
    assert directions == {"caller_to_agent", "agent_to_caller"}, r["segments"]
    assert all(s["translated_text"] and s["end_ms"] >= s["start_ms"] for s in r["segments"])
    assert all(r["delays"][d] is not None and r["delays"][d] > 0 for d in directions), r["delays"]
    assert any(s["delay_ms"] is not None for s in r["segments"])

    txt = requests.get(f"{api}/{caller.sid}/transcript.txt", headers=AUTH, timeout=5)
    assert txt.status_code == 200 and "caller_to_agent:" in txt.text
    vtt = requests.get(f"{api}/{caller.sid}/transcript.vtt", headers=AUTH, timeout=5)
    assert vtt.text.startswith("WEBVTT\n") and "<v agent_to_caller>" in vtt.text
    listing = requests.get(f"{api}?number=%2B{CALLER_NUMBER[1:]}", headers=AUTH, timeout=5)
    assert caller.sid in [c["call_sid"] for c in listing.json()["calls"]]
    assert requests.get(api, timeout=5).status_code == 401


@pytest.mark.slow
def test_streams_are_freed_as_soon_as_clients_go(records_stack: Any) -> None:
    """Under gunicorn each stream holds a request thread: 20 at most, and a client that
    disconnects from a quiet call gives its slot back within a poll, not a heartbeat."""
    twilio, bridge = records_stack.twilio, records_stack.bridge
    twilio.default_dial = DialBehaviour()
    caller = twilio.place_call(ulaw_silence(8000), from_=CALLER_NUMBER, to=BRIDGE_NUMBER)
    wait_streaming(twilio, caller, agent_of(twilio, caller))
    url = f"{bridge.url}/api/calls/{caller.sid}/events"

    def open_all() -> list[requests.Response]:
        """Twenty streams at once, or none (each refused one closes what was opened)."""
        streams = [requests.get(url, headers=AUTH, stream=True, timeout=10) for _ in range(20)]
        if all(s.status_code == 200 for s in streams):
            return streams
        for s in streams:
            s.close()
        return []

    streams = open_all()
    assert len(streams) == 20
    for _ in range(2):
        assert requests.get(url, headers=AUTH, timeout=10).status_code == 503
        for s in streams:
            s.close()
        # Each server-side stream sees its client gone at its next poll (1 s); the heartbeat
        # would take 15 s: all twenty slots must be free again well before that.
        deadline = time.monotonic() + 12 * POLL_S
        streams = open_all()
        while not streams and time.monotonic() < deadline:
            # A refused try holds what it opened for a poll or two: retry after that.
            time.sleep(3 * POLL_S)
            streams = open_all()
        assert len(streams) == 20, "closed streams were not freed within a poll"
    for s in streams:
        s.close()
    caller.hangup()
    wait_call_over(bridge)


@pytest.mark.slow
def test_a_call_cut_by_shutdown_is_closed_in_the_record(
    tmp_path: Path, openai_fake: FakeTranslationServer
) -> None:
    """SIGTERM with no grace: the call ends with a notice, and its record says so."""
    db = tmp_path / "calls.sqlite3"
    env = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "DATABASE_URL": f"sqlite:///{db}",
        "ADMIN_TOKEN": TOKEN,
        "SHUTDOWN_GRACE_SECONDS": "0",
    }
    with bridge_stack(tmp_path, env, openai_fake) as stack:
        before = len(openai_fake.sessions)
        caller = stack.twilio.place_call(
            speech(CALLER_ES_8K_MULAW), from_=CALLER_NUMBER, to=BRIDGE_NUMBER
        )
        wait_streaming(stack.twilio, caller, agent_of(stack.twilio, caller))

        def heard_by_engine_s() -> float:  # 24 kHz PCM16: 48000 bytes a second
            sessions = openai_fake.sessions[before:]
            return max((len(s.received_audio) for s in sessions), default=0) / 48000

        # Mid-sentence: three seconds of the caller's speech have reached the engine.
        assert wait_until(lambda: heard_by_engine_s() >= LEAD_IN_S + 3, 30)
        stack.bridge.proc.send_signal(signal.SIGTERM)
        assert stack.bridge.proc.wait(30) == 0
    store = CallStore(f"sqlite:///{db}")
    try:
        detail = store.get_call(caller.sid)
    finally:
        store.close()
    assert detail is not None
    assert detail.summary.end_reason == "shutdown" and detail.summary.ended_at is not None
    assert detail.segments, "what was said before the stop was kept"
