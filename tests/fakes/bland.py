"""A loopback stand-in for Bland's Live Translation API: REST sessions plus their sockets.

``FakeBland`` serves, on 127.0.0.1 (two ports chosen by the OS):

* REST (``http.server``): ``POST /v1/translation/sessions``, ``GET`` and ``DELETE
  /v1/translation/sessions/<id>``, with ``Authorization: <key>`` (no "Bearer"), JSON bodies
  checked field by field, ``{"data": …, "errors": …}`` answers, and the concurrency cap
  (pending sessions count, ``cap`` knob, 3 like Bland's default).
* WebSocket (websockets sync server): the ``ws_url`` each create returns, opaque and
  single-use (a second connection is refused with 403), expiring ``connect_window_s`` after
  creation (Bland: 10 minutes). In ``twilio_ulaw`` every frame must be Twilio-shaped JSON text.

Every deviation from the documented protocol is recorded in :attr:`FakeBland.violations` (tests
assert it stays empty). Knobs: ``api_key`` (None accepts any non-empty key; refusal is 401),
``cap``, ``answer_delay_s`` (Bland's time to answer an utterance), ``max_duration_s``
(shortens Bland's 30-minute limit: the session answers with it and is ended with
``session_ended`` when it runs out). Inferred where Bland's docs are silent:
create answers 200, the cap is refused with 429, unknown ids with 404.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from bridge.settings.engine_choice import BLAND_LANGUAGES
from tests.fakes.bland_session import StandInSession, Translator

SESSIONS_PATH = "/v1/translation/sessions"
WS_PREFIX = "/ws/translate/"
CREATE_FIELDS = frozenset(
    {"source_language", "target_language", "voice_id", "audio_protocol", "sample_rate",
     "max_duration_seconds"}
)  # fmt: skip
TICK_S = 0.05
# Frames a client must skip: not JSON, not an object, fields of the wrong type, unknown types.
MALFORMED_FRAMES = (
    "this is not JSON {",
    "[1]",
    '{"no": "event"}',
    '{"event": "media", "media": {"payload": 5}}',
    '{"event": "media", "media": {"payload": "not base64 !"}}',
    '{"type": "error", "code": 5, "message": ["x"]}',
    '{"type": "from_the_future"}',
)


class FakeBland:
    def __init__(self, *, api_key: str | None = None, cap: int = 3) -> None:
        self.api_key = api_key
        self.cap = cap
        self.max_duration_s: float | None = None
        self.connect_window_s = 600.0
        self.answer_delay_s = 0.0  # from an utterance's end to its answer
        # "reject": refuse every create (400, as for a language pair Bland does not serve);
        # "close" (or "drop": Bland does not answer a start) closes the socket (1011) on the
        # start frame. None: serve them.
        self.config_fault: str | None = None
        self.malformed = False  # send MALFORMED_FRAMES after each start frame
        self.violations: list[str] = []
        self.refused: list[tuple[int, str]] = []  # (status, error code) of refused requests
        self._sessions: list[StandInSession] = []
        self._lock = threading.Lock()
        self._http: ThreadingHTTPServer | None = None
        self._ws: Server | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._http.daemon_threads = True
        self._ws = serve(
            self._handle_socket,
            "127.0.0.1",
            0,
            process_request=self._check_handshake,
            ping_interval=None,
            close_timeout=1,
        )
        for target, name in ((self._http.serve_forever, "http"), (self._ws.serve_forever, "ws")):
            thread = threading.Thread(target=target, name=f"fake-bland-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        http, ws, self._http, self._ws = self._http, self._ws, None, None
        if http is not None:
            http.shutdown()
            http.server_close()
        if ws is not None:
            ws.shutdown()
        self.drop_all()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> FakeBland:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._http is not None
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def sessions(self) -> list[StandInSession]:
        with self._lock:
            return list(self._sessions)

    def live(self) -> list[StandInSession]:
        return [s for s in self.sessions if s.status != "ENDED"]

    def drop_all(self) -> None:
        """Every connected socket closes abruptly; Bland then ends those sessions."""
        for session in self.sessions:
            if session.connection is not None and session.status == "ACTIVE":
                session.drop()

    def violate(self, what: str) -> None:
        with self._lock:
            self.violations.append(what)

    # -- REST ------------------------------------------------------------------------------

    def rest(self, method: str, path: str, headers: Any, raw: bytes) -> tuple[int, Any]:
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            self.violate(f"{method} {path}: Authorization must be the bare key, not Bearer")
        if not auth or (self.api_key is not None and auth != self.api_key):
            return self._error(401, "UNAUTHORIZED", "Invalid API key")
        if method == "POST" and path == SESSIONS_PATH:
            return self._create(headers, raw)
        if path.startswith(SESSIONS_PATH + "/") and method in ("GET", "DELETE"):
            session = self._find(path.removeprefix(SESSIONS_PATH + "/"))
            if session is None:
                return self._error(404, "TAAS_SESSION_NOT_FOUND", "No such session")
            if method == "DELETE":
                self._delete(session, raw)
            return 200, {"data": session.as_json(), "errors": None}
        self.violate(f"{method} {path}: not an endpoint of the Live Translation API")
        return self._error(404, "NOT_FOUND", "Not found")

    def _create(self, headers: Any, raw: bytes) -> tuple[int, Any]:
        if "application/json" not in headers.get("Content-Type", ""):
            self.violate("POST: Content-Type is not application/json")
        if self.config_fault == "reject":
            return self._error(400, "TAAS_INVALID_REQUEST", "Unsupported language pair")
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        problem = _check_create(body)
        if problem is not None:
            self.violate(f"POST: {problem}")
            return self._error(400, "TAAS_INVALID_REQUEST", problem)
        with self._lock:
            open_now = sum(1 for s in self._sessions if s.status != "ENDED")
            if open_now >= self.cap:
                at_cap = True
            else:
                at_cap = False
                requested = float(body.get("max_duration_seconds", 1800))
                limit = min(requested, self.max_duration_s or requested)
                session = StandInSession(
                    str(uuid.uuid4()), uuid.uuid4().hex, body, time.monotonic(), limit
                )
                self._sessions.append(session)
        if at_cap:
            return self._error(429, "TAAS_CONCURRENCY_LIMIT", f"At most {self.cap} sessions")
        assert self._ws is not None
        port = self._ws.socket.getsockname()[1]
        return 200, {
            "data": {
                "session_id": session.session_id,
                "ws_url": f"ws://127.0.0.1:{port}{WS_PREFIX}{session.token}",
                "token": str(uuid.uuid4()),
                "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600)),
                "max_duration_seconds": math.ceil(session.max_duration_s),
            },
            "errors": None,
        }

    def _delete(self, session: StandInSession, raw: bytes) -> None:
        reason = "api_terminated"
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            text = body.get("reason") if isinstance(body, dict) else None
            if not isinstance(text, str) or len(text) > 200:
                self.violate("DELETE: reason must be a string of at most 200 characters")
            else:
                reason = f"api_terminated:{text}"
        session.deleted = True
        if session.end(reason):
            session.send({"type": "session_ended", "reason": reason})
            if session.connection is not None:
                session.connection.close(1000, "session ended")

    def _find(self, session_id: str) -> StandInSession | None:
        return next((s for s in self.sessions if s.session_id == session_id), None)

    def _error(self, status: int, code: str, message: str) -> tuple[int, Any]:
        self.refused.append((status, code))
        return status, {"data": None, "errors": [{"error": code, "message": message}]}

    # -- WebSocket -------------------------------------------------------------------------

    def _check_handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        token = request.path.removeprefix(WS_PREFIX) if request.path.startswith(WS_PREFIX) else ""
        session = next((s for s in self.sessions if s.token == token), None)
        if session is None:
            return connection.respond(404, "Unknown session\n")
        if session.connection is not None or session.status != "PENDING":
            self.violate("ws_url used more than once")
            return connection.respond(403, "ws_url is single-use\n")
        if time.monotonic() - session.created_at > self.connect_window_s:
            return connection.respond(403, "ws_url expired\n")
        return None

    def _handle_socket(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        token = connection.request.path.removeprefix(WS_PREFIX)
        session = next(s for s in self.sessions if s.token == token)
        session.connection = connection
        session.connected_at = time.monotonic()
        session.status = "ACTIVE"
        translator = Translator(session, self.answer_delay_s)
        session.send({"type": "ready"})
        ticker = threading.Thread(
            target=self._tick, args=(session, translator), name="fake-bland-tick", daemon=True
        )
        ticker.start()
        try:
            for message in connection:
                self._on_frame(session, translator, message)
        except ConnectionClosed:
            pass
        finally:
            # "A dropped WebSocket ends the session": the slot frees even without DELETE.
            session.end("client_disconnected")
            ticker.join(1)

    def _tick(self, session: StandInSession, translator: Translator) -> None:
        assert session.connected_at is not None
        while session.status == "ACTIVE":
            time.sleep(TICK_S)
            translator.tick()
            over = time.monotonic() - session.connected_at >= session.max_duration_s
            if over and session.end("max_duration_reached"):
                session.send({"type": "session_ended", "reason": "max_duration_reached"})
                if session.connection is not None:
                    session.connection.close(1000, "max duration")

    def _on_frame(self, session: StandInSession, translator: Translator, message: Any) -> None:
        if session.status != "ACTIVE":
            return
        if isinstance(message, bytes):
            self.violate("binary frame in twilio_ulaw mode")
            return
        try:
            frame = json.loads(message)
        except ValueError:
            self.violate("text frame is not JSON")
            return
        event = frame.get("event") if isinstance(frame, dict) else None
        if event == "media":
            media = frame.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            try:
                ulaw = base64.b64decode(payload, validate=True) if isinstance(payload, str) else b""
            except (binascii.Error, ValueError):
                ulaw = b""
            if not ulaw:
                self.violate("media frame without a base64 μ-law payload")
                return
            if session.stop_received:
                self.violate("media after stop")
            with session.lock:
                session.received_ulaw += ulaw
            translator.feed(ulaw)
        elif event == "start":
            fmt = (frame.get("start") or {}).get("mediaFormat") or {}
            if fmt.get("encoding") != "audio/x-mulaw" or fmt.get("sampleRate") != 8000:
                self.violate(f"start with a media format other than 8 kHz μ-law: {fmt}")
            if self.config_fault in ("close", "drop") and session.connection is not None:
                session.connection.close(1011, "closed on start")
            elif self.malformed and session.connection is not None:
                for raw in MALFORMED_FRAMES:
                    session.connection.send(raw)
        elif event == "stop":
            session.stop_received = True
            translator.flush()
        elif event not in ("connected", "mark"):
            self.violate(f"unknown Twilio event {event!r}")


def _check_create(body: Any) -> str | None:
    """What is wrong with a create body (None: nothing), per Bland's Create Session docs."""
    if not isinstance(body, dict):
        return "body is not a JSON object"
    unknown = set(body) - CREATE_FIELDS
    if unknown:
        return f"unknown fields {sorted(unknown)}"
    for name in ("source_language", "target_language"):
        if body.get(name) not in BLAND_LANGUAGES:
            return f"{name} {body.get(name)!r} is not a supported code"
    protocol = body.get("audio_protocol", "pcm16")
    if protocol not in ("pcm16", "twilio_ulaw"):
        return f"audio_protocol {protocol!r}"
    rate = body.get("sample_rate")
    if protocol == "twilio_ulaw" and rate is not None:
        return "sample_rate must not be set for twilio_ulaw"
    if rate is not None and not (isinstance(rate, int) and 8000 <= rate <= 48000):
        return f"sample_rate {rate!r}"
    duration = body.get("max_duration_seconds", 1800)
    if not isinstance(duration, int) or not 30 <= duration <= 1800:
        return f"max_duration_seconds {duration!r} is not 30..1800"
    voice = body.get("voice_id")
    if voice is not None and not isinstance(voice, str):
        return "voice_id is not a string"
    return None


def _handler_for(fake: FakeBland) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            status, body = fake.rest(self.command, self.path, self.headers, raw)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve  # noqa: N815 - http.server's naming

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests read violations, not access logs

    return Handler
