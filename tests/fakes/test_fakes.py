"""Tests of the protocol stand-ins themselves, against the official SDKs and tiny local peers.

No bridge code is involved: these prove the fakes speak the wire protocols (so bridge tests that
pass against them mean something) and that every wait in them is bounded.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import pydantic
import pytest
from openai import OpenAI
from openai.types.realtime import RealtimeTranslationServerEvent
from twilio.base.exceptions import TwilioRestException  # type: ignore[import-untyped, unused-ignore]
from twilio.http.http_client import TwilioHttpClient  # type: ignore[import-untyped, unused-ignore]
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped, unused-ignore]
from twilio.rest import Client  # type: ignore[import-untyped, unused-ignore]
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.http11 import Request, Response
from websockets.sync.client import ClientConnection, connect
from websockets.sync.connection import Connection
from websockets.sync.server import ServerConnection, serve

from bridge.sim.playout import PlayoutBuffer
from bridge.sim.twiml import Connect, Say, parse_twiml
from tests.fakes.audio import (
    AGENT_EN_24K_PCM16,
    CALLER_ES_8K_MULAW,
    ENGINE_RATE_HZ,
    dominant_frequency,
    load_wav,
    pcm16_from_bytes,
    pcm16_to_bytes,
    pcm16_to_ulaw,
    sine,
    ulaw_to_pcm16,
)
from tests.fakes.openai_events import unknown_parameters
from tests.fakes.openai_translate import (
    FRAME_BYTES,
    FakeSession,
    FakeTranslationServer,
    ToneTranslator,
    TranslationScript,
    tone_for,
)
from tests.fakes.twilio import DialBehaviour, FakeTwilio

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "test-auth-token"
MODEL = "gpt-realtime-translate"
WAIT_S = 5.0

Json = dict[str, Any]
SERVER_EVENTS: pydantic.TypeAdapter[RealtimeTranslationServerEvent] = pydantic.TypeAdapter(
    RealtimeTranslationServerEvent
)


# -- helpers --------------------------------------------------------------------------------------
def b64(data: bytes) -> str:
    """Base64 text of ``data``."""
    return base64.b64encode(data).decode("ascii")


def tone_pcm(seconds: float, freq_hz: float = 300.0) -> bytes:
    """24 kHz PCM16 tone bytes (speech, as far as the fake model is concerned)."""
    return pcm16_to_bytes(sine(freq_hz, int(ENGINE_RATE_HZ * seconds), ENGINE_RATE_HZ, 5000.0))


def recv_json(ws: Connection, timeout: float = WAIT_S) -> Json:
    """Receive one JSON text message."""
    message = ws.recv(timeout=timeout)
    assert isinstance(message, str)
    data = json.loads(message)
    assert isinstance(data, dict)
    return data


def recv_until(
    ws: Connection, predicate: Callable[[Json], bool], timeout: float = WAIT_S
) -> tuple[Json, list[Json]]:
    """Receive until ``predicate`` matches; return the match and everything before it."""
    deadline = time.monotonic() + timeout
    seen: list[Json] = []
    while True:
        event = recv_json(ws, max(0.01, deadline - time.monotonic()))
        if predicate(event):
            return event, seen
        seen.append(event)


def translation_ws(
    server: FakeTranslationServer,
    key: str | None = "sk-test",
    path: str = "/v1/realtime/translations?model=" + MODEL,
) -> ClientConnection:
    """A raw WebSocket client of the fake translation server."""
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return connect(
        f"ws://127.0.0.1:{server.port}{path}",
        additional_headers=headers,
        open_timeout=WAIT_S,
        close_timeout=2,
        proxy=None,
    )


class RewritingHttpClient(TwilioHttpClient):  # type: ignore[misc, unused-ignore]
    """The twilio SDK's HTTP client, sent to the stand-in instead of api.twilio.com."""

    def __init__(self, base_url: str) -> None:
        super().__init__(timeout=WAIT_S)
        self.base_url = base_url

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        """Rewrite the host, then send as usual."""
        return super().request(
            method, url.replace("https://api.twilio.com", self.base_url), *args, **kwargs
        )


class MiniApp:
    """A tiny application in the bridge's place: signed webhooks over HTTP, streams over WS."""

    def __init__(self, stream_handler: Callable[[ServerConnection], None] | None = None) -> None:
        self.voice_twiml = "<Response/>"
        self.webhooks: list[tuple[str, dict[str, str], bool]] = []  # path, params, signature ok
        self.stream_handshakes: list[tuple[str, bool]] = []
        self.stream_messages: list[tuple[float, Json]] = []
        self.validator = RequestValidator(AUTH_TOKEN)
        self.stream_validator = RequestValidator(AUTH_TOKEN)
        self._stream_handler = stream_handler or self._record_stream
        app = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                params = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
                ok = bool(
                    app.validator.validate(
                        app.http_url + self.path, params, self.headers.get("X-Twilio-Signature", "")
                    )
                )
                app.webhooks.append((self.path, params, ok))
                reply = app.voice_twiml if self.path == "/twilio/voice" else "<Response/>"
                self.send_response(200 if ok else 403)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply.encode())

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._ws = serve(
            self._stream_handler, "127.0.0.1", 0, process_request=self._check, close_timeout=2
        )
        self._threads = [
            threading.Thread(target=self._http.serve_forever, args=(0.05,), daemon=True),
            threading.Thread(target=self._ws.serve_forever, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def http_url(self) -> str:
        """Base URL of the webhook server."""
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def ws_url(self) -> str:
        """URL of the stream endpoint."""
        return f"ws://127.0.0.1:{self._ws.socket.getsockname()[1]}/stream"

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        url = f"ws://127.0.0.1:{self._ws.socket.getsockname()[1]}{request.path}"
        signature = request.headers.get("X-Twilio-Signature", "")
        ok = bool(self.stream_validator.validate(url, {}, signature))
        self.stream_handshakes.append((url, ok))
        return None if ok else connection.respond(403, "bad signature")

    def _record_stream(self, connection: ServerConnection) -> None:
        try:
            for message in connection:
                self.stream_messages.append((time.monotonic(), json.loads(message)))
        except ConnectionClosed:
            pass

    def stream_twiml(self, leg: str) -> str:
        """TwiML connecting a leg to this app's stream endpoint."""
        return (
            f'<Response><Say language="es-MX">Un momento</Say><Connect>'
            f'<Stream url="{self.ws_url}"><Parameter name="leg" value="{leg}"/></Stream>'
            f"</Connect></Response>"
        )

    def close(self) -> None:
        """Stop both servers and join their threads."""
        self._http.shutdown()
        self._http.server_close()
        self._ws.shutdown()
        for thread in self._threads:
            thread.join(WAIT_S)


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """Every stand-in joins its threads on close: none may outlive a test."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 3.0
    leaked = [t for t in threading.enumerate() if t not in before]
    while leaked and time.monotonic() < deadline:
        time.sleep(0.02)
        leaked = [t for t in threading.enumerate() if t not in before]
    assert not leaked, leaked


@pytest.fixture
def translation_server() -> Iterator[FakeTranslationServer]:
    """A started fake translation server."""
    with FakeTranslationServer() as server:
        yield server


@pytest.fixture
def app() -> Iterator[MiniApp]:
    """A MiniApp recording stream messages."""
    mini = MiniApp()
    yield mini
    mini.close()


@pytest.fixture
def twilio(app: MiniApp) -> Iterator[FakeTwilio]:
    """A FakeTwilio in front of ``app``."""
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, app.http_url)
    yield fake
    fake.close()


# -- audio helpers ----------------------------------------------------------------------
def test_load_wav_reads_mulaw_and_pcm_fixtures() -> None:
    rate, fmt, data = load_wav(CALLER_ES_8K_MULAW)
    assert (rate, fmt) == (8000, 7)
    assert 8.0 < len(data) / rate < 9.0
    rate, fmt, data = load_wav(AGENT_EN_24K_PCM16)
    assert (rate, fmt) == (24000, 1)
    assert np.abs(pcm16_from_bytes(data)).max() > 1000


def test_ulaw_codec_round_trips() -> None:
    assert ulaw_to_pcm16(b"\xff\x7f").tolist() == [0, 0]
    tone = sine(440.0, 800, 8000, 8000.0)
    decoded = ulaw_to_pcm16(pcm16_to_ulaw(tone)).astype(np.int32)
    assert np.max(np.abs(decoded - tone)) < 300  # within one μ-law step at that level


def test_twiml_parser_reads_say_and_stream_parameters() -> None:
    verbs = parse_twiml(
        '<?xml version="1.0"?><Response><Say voice="Polly.Lupe" language="es-US">'
        'Hola</Say><Connect><Stream url="wss://h/s"><Parameter name="a" value="1"/>'
        "</Stream></Connect></Response>"
    )
    assert verbs[0] == Say("Hola", "Polly.Lupe", "es-US")
    assert isinstance(verbs[1], Connect) and verbs[1].stream.parameters == {"a": "1"}


def test_playout_buffer_timing_marks_and_clear() -> None:
    buffer = PlayoutBuffer()
    buffer.enqueue(b"\x01" * 8000, now=10.0)  # 1 s of audio, plays 10.0 → 11.0
    buffer.add_mark("a", now=10.1)
    buffer.enqueue(b"\x02" * 4000, now=10.2)  # queued behind: 11.0 → 11.5
    buffer.add_mark("b", now=10.2)
    assert buffer.pop_due_marks(10.99) == []
    assert buffer.pop_due_marks(11.0) == ["a"]
    assert buffer.window(10.995, 80) == b"\x01" * 40 + b"\x02" * 40
    buffer.clear(now=11.25)
    assert buffer.pop_due_marks(11.25) == ["b"]
    assert buffer.played(12.0) == b"\x01" * 8000 + b"\x02" * 2000
    assert buffer.cleared_bytes == 2000
    buffer.add_mark("c", now=12.0)  # nothing queued: due at once
    assert buffer.pop_due_marks(12.0) == ["c"]


# -- OpenAI translation stand-in ------------------------------------------------------------------
def test_sdk_session_translates_speech_frames_only(
    translation_server: FakeTranslationServer,
) -> None:
    client = OpenAI(api_key="sk-test", base_url=translation_server.base_url, max_retries=0)
    events: list[Any] = []
    with client.realtime.translations.connect(model=MODEL) as connection:
        connection.send(
            {
                "type": "session.update",
                "session": {
                    "audio": {
                        "output": {"language": "es"},
                        "input": {"transcription": {"model": "gpt-realtime-whisper"}},
                    }
                },
            }
        )
        for _ in range(5):  # 1 s of silence in 200 ms appends
            connection.send(
                {"type": "session.input_audio_buffer.append", "audio": b64(bytes(FRAME_BYTES))}
            )
        connection.send({"type": "session.input_audio_buffer.append", "audio": b64(tone_pcm(0.6))})
        connection.send({"type": "session.close"})
        deadline = time.monotonic() + WAIT_S
        for event in connection:
            events.append(event)
            assert time.monotonic() < deadline
    types = [event.type for event in events]
    assert types[:2] == ["session.created", "session.updated"]
    assert types[-1] == "session.closed"
    assert events[0].session.model == MODEL and events[0].session.id.startswith("sess_")
    assert events[1].session.audio.output.language == "es"
    deltas = [e for e in events if e.type == "session.output_audio.delta"]
    assert [d.elapsed_ms for d in deltas] == [1200, 1400, 1600]
    for delta in deltas:
        samples = pcm16_from_bytes(base64.b64decode(delta.delta))
        assert samples.size == 4800 and delta.sample_rate == 24000 and delta.format == "pcm16"
        assert dominant_frequency(samples, ENGINE_RATE_HZ) == pytest.approx(tone_for("es"), abs=6)
    transcript = "".join(e.delta for e in events if e.type == "session.output_transcript.delta")
    assert transcript == "hola hola hola "
    assert types.count("session.input_transcript.delta") == 3

    session = translation_server.wait_for_sessions(1)[0]
    assert session.ended.wait(WAIT_S)
    assert session.model == MODEL and session.output_language == "es"
    assert session.transcription_model == "gpt-realtime-whisper"
    assert len(session.appends) == 6 and len(session.received_audio) == 5 * FRAME_BYTES + 28800
    assert [a.time for a in session.appends] == sorted(a.time for a in session.appends)
    assert len(session.sent_deltas) == 3 and session.closed_by_client
    assert session.close_code == 1000 and session.invalid_events == []
    assert session.headers["Authorization"] == "Bearer sk-test"
    for _, sent in session.sent_events:  # everything the fake sent is a valid, exact server event
        assert not unknown_parameters(SERVER_EVENTS.validate_python(sent)), sent


def test_invalid_events_get_error_like_the_real_server(
    translation_server: FakeTranslationServer,
) -> None:
    with translation_ws(translation_server) as ws:
        assert recv_json(ws)["type"] == "session.created"
        cases: list[tuple[str, str]] = [
            ('{"type": "session.append"}', "invalid_value"),
            ('{"type": "session.input_audio_buffer.append"}', "missing_required_parameter"),
            (
                '{"type": "session.update", "session": {"audio": {"outptu": {}}}}',
                "unknown_parameter",
            ),
            (
                '{"type": "session.update", "session": {"audio": {"output": {"language": "xx"}}}}',
                "invalid_value",
            ),
            ('{"type": "session.input_audio_buffer.append", "audio": "***"}', "invalid_value"),
            ("not json", "invalid_json"),
        ]
        for raw, code in cases:
            ws.send(raw)
            event = recv_json(ws)
            assert event["type"] == "error", raw
            assert event["error"]["type"] == "invalid_request_error"
            assert event["error"]["code"] == code, raw
    session = translation_server.sessions[0]
    assert len(session.invalid_events) == len(cases)
    assert session.output_language is None


@pytest.mark.parametrize(
    ("key", "path", "status"),
    [
        (None, "/v1/realtime/translations?model=" + MODEL, 401),
        ("sk-test", "/v1/realtime?model=" + MODEL, 404),
        ("sk-test", "/v1/realtime/translations", 400),
    ],
)
def test_handshake_is_refused_like_the_api(
    translation_server: FakeTranslationServer, key: str | None, path: str, status: int
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        translation_ws(translation_server, key, path)
    assert refused.value.response.status_code == status
    assert translation_server.sessions == []


def test_delay_and_drops_are_scriptable() -> None:
    with FakeTranslationServer(ToneTranslator(delay_s=0.3)) as server:
        with translation_ws(server) as ws:
            recv_json(ws)
            ws.send(
                json.dumps(
                    {"type": "session.input_audio_buffer.append", "audio": b64(tone_pcm(0.2))}
                )
            )
            recv_until(ws, lambda e: e["type"] == "session.output_audio.delta")
            session = server.sessions[0]
            latency = session.sent_deltas[0][1] - session.appends[0].time
            assert 0.28 < latency < 1.0
            server.drop_all(1011)
            with pytest.raises(ConnectionClosedError) as closed:
                recv_until(ws, lambda e: False)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        with translation_ws(server) as ws:
            recv_json(ws)
            server.drop_all(None)  # abrupt: no close frame
            with pytest.raises(ConnectionClosedError) as closed:
                recv_until(ws, lambda e: False)
            assert closed.value.rcvd is None  # i.e. 1006
        assert server.wait_for_sessions(2)[1].ended.wait(WAIT_S)


def test_sdk_reconnects_to_a_new_session_after_1011(
    translation_server: FakeTranslationServer,
) -> None:
    client = OpenAI(api_key="sk-test", base_url=translation_server.base_url, max_retries=0)
    reconnects: list[int] = []

    def on_reconnecting(event: Any) -> None:
        reconnects.append(event.close_code)

    created = 0
    manager = client.realtime.translations.connect(
        model=MODEL, on_reconnecting=on_reconnecting, initial_delay=0.05
    )
    with manager as connection:
        deadline = time.monotonic() + WAIT_S
        for event in connection:
            assert time.monotonic() < deadline
            if event.type == "session.created":
                created += 1
                if created == 1:
                    translation_server.drop_all(1011)
                else:
                    connection.send({"type": "session.close"})
    assert created == 2 and reconnects == [1011]
    first, second = translation_server.wait_for_sessions(2)
    assert first.close_code == 1011 and second.closed_by_client


class ErrorThenClose(TranslationScript):
    """Answer the first frame with a server error, then close 1011."""

    def on_frame(self, session: FakeSession, index: int, frame: bytes) -> None:
        """Fail on frame 0."""
        if index == 0:
            session.send_error("server_error", "The server had an error.")
            session.close_connection(1011, "internal error")


def test_sdk_sees_scripted_error_then_close() -> None:
    with FakeTranslationServer(ErrorThenClose()) as server:
        client = OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)
        seen: list[str] = []
        with (
            pytest.raises(ConnectionClosedError),
            client.realtime.translations.connect(model=MODEL) as connection,
        ):
            connection.send(
                {"type": "session.input_audio_buffer.append", "audio": b64(bytes(FRAME_BYTES))}
            )
            deadline = time.monotonic() + WAIT_S
            for event in connection:
                seen.append(event.type)
                assert time.monotonic() < deadline
        assert seen == ["session.created", "error"]
        assert server.sessions[0].ended.wait(WAIT_S)
        assert server.sessions[0].close_code == 1011


# -- Twilio stand-in: REST -------------------------------------------------------------------------
def test_sdk_creates_and_ends_a_call(app: MiniApp, twilio: FakeTwilio) -> None:
    client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=RewritingHttpClient(twilio.rest_base_url))
    call = client.calls.create(
        to="+15550003333",
        from_="+15550002222",
        twiml=app.stream_twiml("agent"),
        status_callback=app.http_url + "/twilio/status?leg=agent",
        status_callback_event=["initiated", "ringing", "answered", "completed"],
    )
    assert call.sid.startswith("CA") and len(call.sid) == 34 and call.status == "queued"
    fake = twilio.calls[call.sid]
    assert twilio.wait_for(lambda: any(m["event"] == "media" for _, m in app.stream_messages))
    assert fake.said == ["Un momento"] and fake.says[0].language == "es-MX"
    updated = client.calls(call.sid).update(status="completed")
    assert updated.sid == call.sid
    assert fake.wait_ended(WAIT_S) and fake.status == "completed"
    assert twilio.wait_for(
        lambda: any(p.get("CallStatus") == "completed" for _, p, _ in app.webhooks)
    )
    events = [m for _, m in app.stream_messages]
    assert events[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = events[1]["start"]
    assert start["callSid"] == call.sid and start["customParameters"] == {"leg": "agent"}
    assert start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert events[-1]["event"] == "stop" and events[-1]["stop"]["callSid"] == call.sid
    assert app.stream_handshakes == [(app.ws_url, True)]
    callbacks = [p for path, p, ok in app.webhooks if path.startswith("/twilio/status") and ok]
    assert [p["CallStatus"] for p in callbacks] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert [p["SequenceNumber"] for p in callbacks] == ["0", "1", "2", "3"]
    assert callbacks[-1]["CallbackSource"] == "call-progress-events"
    assert "CallDuration" in callbacks[-1]
    assert all(ok for _, _, ok in app.webhooks)
    assert [r.method for r in twilio.rest_requests] == ["POST", "POST"]
    assert twilio.rest_requests[0].params["StatusCallbackEvent"] == [
        "initiated",
        "ringing",
        "answered",
        "completed",
    ]


def test_rest_errors_use_twilio_error_json(app: MiniApp, twilio: FakeTwilio) -> None:
    http = RewritingHttpClient(twilio.rest_base_url)
    bad = Client(ACCOUNT_SID, "wrong-token", http_client=http)
    with pytest.raises(TwilioRestException) as err:
        bad.calls.create(to="+1", from_="+2", twiml="<Response/>")
    assert err.value.status == 401 and err.value.code == 20003
    client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=http)
    with pytest.raises(TwilioRestException) as err:
        client.calls.create(to="+1", from_="+2")
    assert err.value.status == 400 and err.value.code == 21205
    with pytest.raises(TwilioRestException) as err:
        client.calls.create(to="+1", from_="+2", twiml="<Response>" + " " * 4000 + "</Response>")
    assert err.value.code == 32018
    with pytest.raises(TwilioRestException) as err:
        client.calls("CA" + "f" * 32).update(status="completed")
    assert err.value.status == 404
    assert twilio.calls == {}


def test_busy_party_gets_final_status_callback(app: MiniApp, twilio: FakeTwilio) -> None:
    twilio.dial_behaviours["+15550009999"] = DialBehaviour(outcome="busy", answer_delay_s=0.05)
    client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=RewritingHttpClient(twilio.rest_base_url))
    call = client.calls.create(
        to="+15550009999",
        from_="+1",
        twiml=app.stream_twiml("agent"),
        status_callback=app.http_url + "/twilio/status",
        status_callback_event=["ringing"],
    )
    assert twilio.calls[call.sid].wait_ended(WAIT_S)
    assert twilio.wait_for(lambda: len(app.webhooks) == 2)
    assert [p["CallStatus"] for _, p, _ in app.webhooks] == ["ringing", "busy"]
    assert app.stream_handshakes == []


def test_redirect_ends_the_stream_then_says_and_hangs_up(app: MiniApp, twilio: FakeTwilio) -> None:
    client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=RewritingHttpClient(twilio.rest_base_url))
    call = client.calls.create(to="+1", from_="+2", twiml=app.stream_twiml("agent"))
    fake = twilio.calls[call.sid]
    assert twilio.wait_for(lambda: fake.stream is not None and fake.stream.media_sent > 2)
    client.calls(call.sid).update(twiml="<Response><Say>Adiós</Say><Hangup/></Response>")
    assert fake.wait_ended(WAIT_S)
    assert fake.said == ["Un momento", "Adiós"] and fake.status == "completed"
    assert twilio.wait_for(lambda: app.stream_messages[-1][1]["event"] == "stop", WAIT_S)
    assert not fake.stream_closed_by_server.is_set()


# -- Twilio stand-in: webhooks and Media Streams ----------------------------------------
def test_webhook_signature_modes(app: MiniApp, twilio: FakeTwilio) -> None:
    params = {"CallSid": "CA" + "1" * 32, "From": "+1"}
    for signature, expected in ((None, 200), ("bad", 403), ("none", 403)):
        response = twilio.post_webhook("/twilio/other", params, signature)
        assert response is not None and response.status_code == expected
    assert [ok for _, _, ok in app.webhooks] == [True, False, False]


def test_place_call_streams_in_real_time_and_ends_when_app_closes() -> None:
    stop_after_s = 1.0

    def close_after_a_while(connection: ServerConnection) -> None:
        deadline = time.monotonic() + stop_after_s
        try:
            while time.monotonic() < deadline:
                try:
                    message = connection.recv(timeout=0.05)
                except TimeoutError:
                    continue
                mini.stream_messages.append((time.monotonic(), json.loads(message)))
        except ConnectionClosed:
            return

    mini = MiniApp(close_after_a_while)
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, mini.http_url)
    try:
        mini.voice_twiml = mini.stream_twiml("caller")
        audio = load_wav(CALLER_ES_8K_MULAW)[2]
        call = fake.place_call(audio[:800])  # 100 ms of speech, then line silence
        assert call.stream_closed_by_server.wait(WAIT_S)
        assert call.wait_ended(WAIT_S) and call.status == "completed"
        voice = mini.webhooks[0]
        assert voice[0] == "/twilio/voice" and voice[2]
        assert voice[1]["CallStatus"] == "ringing" and voice[1]["Direction"] == "inbound"
        media = [(t, m) for t, m in mini.stream_messages if m["event"] == "media"]
        assert 42 <= len(media) <= 55  # one per 20 ms over ~1 s
        assert [m["media"]["chunk"] for _, m in media] == [str(i + 1) for i in range(len(media))]
        assert media[1][1]["media"]["timestamp"] == "20"
        payloads = b"".join(base64.b64decode(m["media"]["payload"]) for _, m in media)
        assert payloads[:800] == audio[:800] and set(payloads[800:]) == {0xFF}
        sequence = [int(m["sequenceNumber"]) for _, m in mini.stream_messages[1:]]
        assert sequence == list(range(1, len(sequence) + 1))
        assert call.violations == []
    finally:
        fake.close()
        mini.close()


def test_marks_echo_after_playout_and_clear_flushes_them() -> None:
    results: dict[str, float] = {}

    def bridge(connection: ServerConnection) -> None:
        start, _ = recv_until(connection, lambda m: m["event"] == "start")
        sid = start["streamSid"]
        frame = b64(bytes([0x55]) * 160)
        for _ in range(25):  # 0.5 s of audio, sent at once
            connection.send(
                json.dumps({"event": "media", "streamSid": sid, "media": {"payload": frame}})
            )
        connection.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "m1"}}))
        results["sent"] = time.monotonic()
        recv_until(connection, lambda m: m["event"] == "mark")
        results["m1"] = time.monotonic()
        for _ in range(50):
            connection.send(
                json.dumps({"event": "media", "streamSid": sid, "media": {"payload": frame}})
            )
        connection.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "m2"}}))
        time.sleep(0.2)
        connection.send(json.dumps({"event": "clear", "streamSid": sid}))
        results["clear"] = time.monotonic()
        recv_until(connection, lambda m: m["event"] == "mark")
        results["m2"] = time.monotonic()
        connection.send(b"\x00")  # a binary frame: a protocol violation
        connection.send(json.dumps({"event": "clear", "streamSid": "MZwrong"}))
        time.sleep(0.1)

    mini = MiniApp(bridge)
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, mini.http_url)
    try:
        mini.voice_twiml = mini.stream_twiml("caller")
        call = fake.place_call(b"")
        assert call.wait_ended(WAIT_S)
        # Lower bounds are exact protocol facts; upper bounds leave room for a loaded machine.
        assert 0.45 < results["m1"] - results["sent"] < 1.0
        assert results["m2"] - results["clear"] < 0.5
        stream = call.stream
        assert stream is not None
        assert [name for name, _ in call.marks_sent_back] == ["m1", "m2"]
        assert len(call.heard_ulaw()) == 75 * 160 and set(stream.frame_sizes()) == {160}
        played = stream.played_ulaw()  # all of the first 0.5 s, part of the second second
        assert 4000 < len(played) < 4000 + (results["clear"] - results["m1"] + 0.05) * 8000
        assert stream.playout.cleared_bytes == 75 * 160 - len(played)
        assert call.violations == [
            "31950: binary frame",
            "31951: clear with wrong streamSid 'MZwrong'",
        ]
    finally:
        fake.close()
        mini.close()


def test_agent_leg_echoes_what_it_hears_and_hangs_up() -> None:
    tone = pcm16_to_ulaw(sine(1000.0, 8000, 8000, 8000.0))  # 1 s at 1 kHz

    def bridge(connection: ServerConnection) -> None:
        start, _ = recv_until(connection, lambda m: m["event"] == "start")
        for i in range(0, len(tone), 160):
            connection.send(
                json.dumps(
                    {
                        "event": "media",
                        "streamSid": start["streamSid"],
                        "media": {"payload": b64(tone[i : i + 160])},
                    }
                )
            )
        mini._record_stream(connection)

    mini = MiniApp(bridge)
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, mini.http_url)
    try:
        fake.default_dial = DialBehaviour(answer_delay_s=0.0, echo_gain=0.5)
        client = Client(
            ACCOUNT_SID, AUTH_TOKEN, http_client=RewritingHttpClient(fake.rest_base_url)
        )
        sid = client.calls.create(to="+1", from_="+2", twiml=mini.stream_twiml("agent")).sid
        call = fake.calls[sid]

        def echoed() -> bool:
            payloads = [
                base64.b64decode(m["media"]["payload"])
                for _, m in list(mini.stream_messages)
                if m["event"] == "media"
            ]
            heard = ulaw_to_pcm16(b"".join(payloads[-10:]))
            return dominant_frequency(heard, 8000) == pytest.approx(1000.0, abs=30)

        assert fake.wait_for(echoed, WAIT_S)
        call.hangup()
        assert call.wait_ended(WAIT_S) and call.status == "completed"
        # The bridge side records what it reads in its own thread: wait for the stop to land.
        assert fake.wait_for(
            lambda: bool(mini.stream_messages) and mini.stream_messages[-1][1]["event"] == "stop",
            WAIT_S,
        )
        assert not call.stream_closed_by_server.is_set()
    finally:
        fake.close()
        mini.close()


def test_close_ends_live_calls(app: MiniApp) -> None:
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, app.http_url)
    app.voice_twiml = app.stream_twiml("caller")
    call = fake.place_call(b"")
    assert fake.wait_for(lambda: len(app.stream_messages) > 3)
    fake.close()
    fake.close()  # idempotent
    assert call.ended.is_set() and call.status == "completed"
    assert fake.wait_for(lambda: app.stream_messages[-1][1]["event"] == "stop", WAIT_S)


def test_refused_stream_handshake_ends_the_call(app: MiniApp, twilio: FakeTwilio) -> None:
    app.stream_validator = RequestValidator("another-token")
    app.voice_twiml = app.stream_twiml("caller")
    call = twilio.place_call(b"")
    assert call.wait_ended(WAIT_S) and call.status == "completed"
    assert app.stream_handshakes == [(app.ws_url, False)]
    assert call.violations == ["31920: stream handshake failed: HTTP 403"]
