"""The HTTP face of the Twilio stand-in: the Calls REST API the twilio SDK talks to.

``RestServer`` is a ``ThreadingHTTPServer`` on 127.0.0.1 (non-daemon request threads, joined on
close). It authenticates, parses forms, records every request, and hands calls to a
:class:`CallApi` (the ``TwilioSim``); JSON shapes follow Twilio's call resource and error body.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs

logger = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
_CALLS = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Calls\.json$")
_CALL = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Calls/(?P<sid>[^/.]+)\.json$")

Form = dict[str, list[str]]


class RestError(Exception):
    """An API error rendered as Twilio's JSON error body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        """Twilio's error JSON (``code``, ``message``, ``more_info``, ``status``)."""
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


@dataclass(frozen=True, slots=True)
class RestRequest:
    """One request the REST stand-in received."""

    method: str
    path: str
    params: Form
    time: float
    status: int


class CallApi(Protocol):
    """What the REST layer needs from the Twilio stand-in."""

    account_sid: str
    auth_token: str

    def create_call(self, form: Form) -> dict[str, Any]:
        """Create a call; return its resource JSON or raise RestError."""

    def update_call(self, sid: str, form: Form) -> dict[str, Any]:
        """Update a call; return its resource JSON or raise RestError."""

    def fetch_call(self, sid: str) -> dict[str, Any]:
        """Return a call's resource JSON or raise RestError."""


def rfc2822(epoch_s: float | None) -> str | None:
    """Twilio's date format (``Tue, 18 Aug 2020 20:13:13 +0000``)."""
    return None if epoch_s is None else formatdate(epoch_s, usegmt=False).replace("-0000", "+0000")


def first(form: Form, name: str) -> str | None:
    """The first value of a form field, or None."""
    values = form.get(name)
    return values[0] if values else None


class _Handler(BaseHTTPRequestHandler):
    server: RestServer

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("rest: " + format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _form(self) -> Form:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8") if length else ""
        return parse_qs(body, keep_blank_values=True)

    def _authorised(self) -> bool:
        api = self.server.api
        expected = base64.b64encode(f"{api.account_sid}:{api.auth_token}".encode()).decode()
        return self.headers.get("Authorization", "") == f"Basic {expected}"

    def _dispatch(self, method: str) -> None:
        form = self._form() if method == "POST" else {}
        path = self.path.split("?", 1)[0]
        try:
            status, body = self._route(method, path, form)
        except RestError as err:
            status, body = err.status, err.body()
        except Exception:  # a thread boundary: answer 500 like an API outage, and log it
            logger.exception("rest handler failed")
            status, body = 500, RestError(500, 20500, "Internal Server Error").body()
        self.server.record(RestRequest(method, path, form, time.monotonic(), status))
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _route(self, method: str, path: str, form: Form) -> tuple[int, dict[str, Any]]:
        api = self.server.api
        if not self._authorised():
            raise RestError(401, 20003, "Authenticate")
        calls, call = _CALLS.match(path), _CALL.match(path)
        match = calls or call
        if match is None or match["account"] != api.account_sid:
            raise RestError(404, 20404, f"The requested resource {path} was not found")
        if calls and method == "POST":
            return 201, api.create_call(form)
        if call and method == "POST":
            return 200, api.update_call(call["sid"], form)
        if call and method == "GET":
            return 200, api.fetch_call(call["sid"])
        raise RestError(405, 20004, "Method not allowed")


class RestServer(ThreadingHTTPServer):
    """The REST API on 127.0.0.1, a free port, served from a background thread."""

    daemon_threads = False  # request threads are joined by server_close()
    block_on_close = True

    def __init__(self, api: CallApi) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api = api
        self.requests: list[RestRequest] = []
        self._record_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="sim-twilio-rest",
            daemon=True,
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def record(self, request: RestRequest) -> None:
        """Append to ``requests`` (thread-safe)."""
        with self._record_lock:
            self.requests.append(request)

    def close(self) -> None:
        """Stop serving and join every thread."""
        self.shutdown()
        self.server_close()
        self._thread.join(5.0)
