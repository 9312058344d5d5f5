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
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs

logger = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
# /2010-04-01/Accounts/{AccountSid}/{Resource}.json (list, create) or …/{Resource}/{Sid}.json
_RESOURCE = re.compile(
    r"^/2010-04-01/Accounts/(?P<account>[^/]+)/(?P<kind>Calls|IncomingPhoneNumbers)"
    r"(?:/(?P<sid>[^/.]+))?\.json$"
)

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

    def list_numbers(self, query: Form) -> dict[str, Any]:
        """A page of the account's IncomingPhoneNumbers matching ``query``."""

    def fetch_number(self, sid: str) -> dict[str, Any]:
        """One IncomingPhoneNumber's resource JSON or raise RestError."""

    def update_number(self, sid: str, form: Form) -> dict[str, Any]:
        """Update an IncomingPhoneNumber; return its resource JSON or raise RestError."""


def new_sid(prefix: str) -> str:
    """A Twilio SID: two-letter prefix (``CA`` a call, ``MZ`` a stream) plus 32 hex digits."""
    return prefix + secrets.token_hex(16)


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
        path, _, query = self.path.partition("?")
        form = self._form() if method == "POST" else parse_qs(query, keep_blank_values=True)
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
        match = _RESOURCE.match(path)
        if match is None or match["account"] != api.account_sid:
            raise RestError(404, 20404, f"The requested resource {path} was not found")
        kind, sid = match["kind"], match["sid"]
        routes: dict[tuple[str, bool, str], Callable[[], tuple[int, dict[str, Any]]]] = {
            ("Calls", False, "POST"): lambda: (201, api.create_call(form)),
            ("Calls", True, "POST"): lambda: (200, api.update_call(sid, form)),
            ("Calls", True, "GET"): lambda: (200, api.fetch_call(sid)),
            ("IncomingPhoneNumbers", False, "GET"): lambda: (200, api.list_numbers(form)),
            ("IncomingPhoneNumbers", True, "GET"): lambda: (200, api.fetch_number(sid)),
            ("IncomingPhoneNumbers", True, "POST"): lambda: (200, api.update_number(sid, form)),
        }
        route = routes.get((kind, sid is not None, method))
        if route is None:
            raise RestError(405, 20004, "Method not allowed")
        return route()


class RestServer(ThreadingHTTPServer):
    """The REST API on ``host:port`` (default 127.0.0.1, a free port), served from a background
    thread. A deployed bridge can only reach it on an address it can route to."""

    daemon_threads = False  # request threads are joined by server_close()
    block_on_close = True

    def __init__(self, api: CallApi, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
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
        """``http://HOST:PORT`` (127.0.0.1 when listening on every address)."""
        host = str(self.server_address[0])
        if host in ("0.0.0.0", ""):  # noqa: S104 (naming the wildcard, not binding to it)
            host = "127.0.0.1"
        return f"http://{host}:{self.server_address[1]}"

    def record(self, request: RestRequest) -> None:
        """Append to ``requests`` (thread-safe)."""
        with self._record_lock:
            self.requests.append(request)

    def close(self) -> None:
        """Stop serving and join every thread."""
        self.shutdown()
        self.server_close()
        self._thread.join(5.0)
