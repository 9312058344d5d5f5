"""Twilio's requests to the application: signed, routed, recorded, callbacks sent in order.

Twilio signs every request (``X-Twilio-Signature``) for the URL it was given. Behind a load
balancer the request really goes where ``router`` says, still signed for that URL, so a test can
play the balancer. Every request and the answer it got is kept as a :class:`WebhookRecord`.
Callbacks (call status, AMD verdicts, stream events) are queued and sent in order by one poster
thread, so a slow application never holds up the call that reported them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping

import requests
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped, unused-ignore]

from bridge.sim.rest import API_VERSION

logger = logging.getLogger(__name__)

_HTTP_TIMEOUT_S = 10.0
_POLL_S = 0.1
# The poster's join at close: the last callback's HTTP timeout, and a margin.
CLOSE_TIMEOUT_S = _HTTP_TIMEOUT_S + 2.0


def sign(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """``X-Twilio-Signature`` for a request to ``url`` with form ``params``."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))


def call_params(
    account_sid: str, sid: str, *, direction: str, from_: str, to: str, status: str
) -> dict[str, str]:
    """The fields Twilio sends about a call with every request concerning it."""
    return {
        "AccountSid": account_sid,
        "ApiVersion": API_VERSION,
        "CallSid": sid,
        "CallStatus": status,
        "Called": to,
        "Caller": from_,
        "Direction": direction,
        "From": from_,
        "To": to,
    }


class WebhookRecord:
    """One request Twilio made to the application, and the answer it got."""

    def __init__(
        self,
        kind: str,
        url: str,
        method: str,
        params: Mapping[str, str],
        *,
        status: int | None,
        body: str,
    ) -> None:
        self.kind = kind
        self.url = url
        self.method = method
        self.params = dict(params)
        self.status = status
        self.body = body
        self.time = time.monotonic()

    def __repr__(self) -> str:
        return f"WebhookRecord({self.kind} {self.method} {self.url} -> {self.status})"


class WebhookSender:
    """Sends Twilio's requests to the bridge at ``bridge_url``, signed with ``auth_token``."""

    def __init__(self, auth_token: str, bridge_url: str) -> None:
        self.auth_token = auth_token
        self.bridge_url = bridge_url
        # (kind, url) → the URL really requested; None: ``url`` itself. See TwilioSim.router.
        self.router: Callable[[str, str], str] | None = None
        self.records: list[WebhookRecord] = []
        self._closed = False
        self._outbox: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._poster = threading.Thread(
            target=self._post_loop, name="sim-twilio-poster", daemon=True
        )
        self._poster.start()

    def routed(self, kind: str, url: str) -> str:
        """The URL a request for ``url`` really goes to (see ``router``)."""
        return url if self.router is None else self.router(kind, url)

    def post(
        self,
        path: str,
        params: Mapping[str, str],
        signature: str | None = None,
        *,
        method: str = "POST",
        kind: str = "raw",
    ) -> requests.Response | None:
        """POST (or GET) ``params`` to the bridge, signed as Twilio signs; see
        :meth:`TwilioSim.post_webhook`. None if the bridge could not be reached."""
        url = path if path.startswith(("http://", "https://")) else self.bridge_url + path
        if method == "GET":
            url = requests.Request("GET", url, params=dict(params)).prepare().url or url
        target = self.routed(kind, url)
        signed_params: Mapping[str, str] = {} if method == "GET" else params
        headers = {
            "User-Agent": "TwilioProxy/1.1",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        if signature is None:
            headers["X-Twilio-Signature"] = sign(self.auth_token, url, signed_params)
        elif signature == "bad":
            headers["X-Twilio-Signature"] = sign(self.auth_token + "x", url, signed_params)
        elif signature != "none":
            headers["X-Twilio-Signature"] = signature
        try:
            response = requests.request(
                method,
                target,
                data=None if method == "GET" else dict(params),
                headers=headers,
                timeout=_HTTP_TIMEOUT_S,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            logger.info("webhook %s %s failed: %s", method, url, exc)
            self.records.append(
                WebhookRecord(kind, url, method, params, status=None, body=str(exc))
            )
            return None
        self.records.append(
            WebhookRecord(
                kind, url, method, params, status=response.status_code, body=response.text
            )
        )
        return response

    def post_async(
        self, url: str, method: str, params: Mapping[str, str], kind: str = "callback"
    ) -> None:
        """Queue a signed webhook; the poster thread sends them in order."""
        snapshot = dict(params)

        def job() -> None:
            self.post(url, snapshot, method=method.upper(), kind=kind)

        self._outbox.put(job)

    def close(self) -> None:
        """Send what is queued, then stop the poster and join it."""
        self._closed = True
        self._outbox.put(None)
        self._poster.join(CLOSE_TIMEOUT_S)

    def _post_loop(self) -> None:
        while True:
            try:
                job = self._outbox.get(timeout=_POLL_S)
            except queue.Empty:
                if self._closed:
                    return
                continue
            if job is None:
                return
            try:
                job()
            except Exception:  # a thread boundary: one failed callback must not stop the rest
                logger.exception("status callback failed")
