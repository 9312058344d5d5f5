"""A local stand-in for Twilio: the Calls REST API, signed webhooks and Media Streams.

``TwilioSim(account_sid, auth_token, bridge_url)`` plays the carrier for a bridge whose public
base URL is ``bridge_url`` (``http://127.0.0.1:PORT``):

* ``place_call(audio)`` is a caller dialling in: the signed voice webhook, then the TwiML it
  returns (``<Say>``, ``<Gather>``, ``<Redirect>``, ``<Connect><Stream>`` …) on a call executor
  thread; ``gather_answers`` scripts what the caller answers each ``<Gather>`` (keys, speech or
  silence), posted signed to its action as Twilio does;
* the bridge's ``client.calls.create(...)`` (SDK pointed at ``rest_base_url``) dials a party that
  behaves per :class:`DialBehaviour` and reports progress through signed status callbacks,
  and, with ``MachineDetection``, its answering machine verdict (``DialBehaviour.answered_by``);
* every stream is a real WebSocket client speaking Twilio's Media Streams protocol in real time.

Concurrency: the REST server has its own threads; each call has one executor thread; each stream
has a writer and a reader; status callbacks go out in order from one poster thread. ``close()``
ends every call and joins every thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from bridge.sim.answers import GatherAnswer
from bridge.sim.call import DialBehaviour, SimCall
from bridge.sim.media import InboundFilter, new_sid, sign
from bridge.sim.numbers import PhoneNumbers
from bridge.sim.rest import API_VERSION, Form, RestError, RestRequest, RestServer, first

__all__ = ["DialBehaviour", "GatherAnswer", "SimCall", "TwilioSim", "WebhookRecord"]

logger = logging.getLogger(__name__)

MAX_INLINE_TWIML = 4000
_HTTP_TIMEOUT_S = 10.0
_POLL_S = 0.1


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


class TwilioSim:
    """The carrier. Configure ``default_dial`` / ``dial_behaviours[to]`` before the bridge dials."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        bridge_url: str,
        *,
        voice_path: str = "/twilio/voice",
        max_call_s: float = 120.0,
        say_s_per_char: float = 0.0,
        gather_wait_scale: float = 0.0,
        rest_host: str = "127.0.0.1",
        rest_port: int = 0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.bridge_url = bridge_url.rstrip("/")
        self.voice_path = voice_path
        self.max_call_s = max_call_s
        self.say_s_per_char = say_s_per_char
        # The share of a <Gather>'s timeout really waited when the party says nothing (0: the
        # silence is over at once, so menu tests do not sit through it).
        self.gather_wait_scale = gather_wait_scale
        self.default_dial = DialBehaviour()
        self.dial_behaviours: dict[str, DialBehaviour] = {}
        # A load balancer in front of several bridges: (kind, url) → the URL really requested,
        # for kinds "voice", "status", "twiml", "amd", "callback", "stream:caller",
        # "stream:agent". Requests stay signed for the URL Twilio was given. None: to ``url``.
        self.router: Callable[[str, str], str] | None = None
        # Fault injection: every POST …/Calls.json fails with this error while it is set.
        self.create_failure: RestError | None = None
        self.webhooks: list[WebhookRecord] = []
        self._calls: dict[str, SimCall] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._outbox: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._poster = threading.Thread(
            target=self._post_loop, name="sim-twilio-poster", daemon=True
        )
        self._poster.start()
        self.numbers = PhoneNumbers(account_sid)
        self._rest = RestServer(self, rest_host, rest_port)

    # -- observation -----------------------------------------------------------------------
    @property
    def rest_base_url(self) -> str:
        """Where the twilio SDK's ``https://api.twilio.com`` should be rewritten to."""
        return self._rest.base_url

    @property
    def rest_requests(self) -> list[RestRequest]:
        """Every REST request received (method, path, form params, time, status)."""
        return list(self._rest.requests)

    @property
    def calls(self) -> dict[str, SimCall]:
        """All calls by SID (a snapshot)."""
        with self._lock:
            return dict(self._calls)

    def agent_calls(self) -> list[SimCall]:
        """Calls created through the REST API, in creation order."""
        return [c for c in self.calls.values() if c.direction == "outbound-api"]

    def caller_calls(self) -> list[SimCall]:
        """Calls placed with :meth:`place_call`."""
        return [c for c in self.calls.values() if c.direction == "inbound"]

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01
    ) -> bool:
        """Poll ``predicate`` until true or ``timeout``; return its last value."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return predicate()
            time.sleep(interval)
        return True

    # -- the caller's side -------------------------------------------------------------------
    def place_call(
        self,
        caller_audio: bytes,
        from_: str = "+15550001111",
        to: str = "+15550002222",
        *,
        echo_gain: float = 0.0,
        inbound_filter: InboundFilter | None = None,
        hangup_after_s: float | None = None,
        stop_reading_after_s: float | None = None,
        status_callback: str | None = None,
        status_callback_events: frozenset[str] = frozenset(),
        gather_answers: tuple[GatherAnswer | None, ...] = (),
    ) -> SimCall:
        """A caller dials the bridge's number: voice webhook, then run the TwiML answer.

        ``gather_answers``: the caller's answer to each ``<Gather>`` in turn (None: silence).
        ``stop_reading_after_s``: the caller's stream stops reading the bridge's frames then.
        """
        sid = new_sid("CA")
        params = self._call_params(sid, "inbound", from_, to, "ringing")
        for prefix in ("Called", "Caller", "From", "To"):
            params.update(
                {
                    f"{prefix}City": "",
                    f"{prefix}State": "",
                    f"{prefix}Zip": "",
                    f"{prefix}Country": "US",
                }
            )
        response = self.post_webhook(self.voice_path, params, kind="voice")
        twiml = response.text if response is not None and response.ok else None
        behaviour = DialBehaviour(
            audio=caller_audio,
            echo_gain=echo_gain,
            inbound_filter=inbound_filter,
            hangup_after_s=hangup_after_s,
            stop_reading_after_s=stop_reading_after_s,
            gather_answers=gather_answers,
        )
        call = SimCall(
            self,
            sid,
            "inbound",
            from_,
            to,
            behaviour=behaviour,
            twiml=twiml,
            status_callback=status_callback,
            status_callback_events=status_callback_events,
            label="caller",
        )
        if twiml is None:
            status = response.status_code if response is not None else "no response"
            call.notes.append(f"11200: voice webhook failed ({status})")
        self._register(call)
        call.start()
        return call

    def post_webhook(
        self,
        path: str,
        params: Mapping[str, str],
        signature: str | None = None,
        *,
        method: str = "POST",
        kind: str = "raw",
    ) -> requests.Response | None:
        """POST (or GET) ``params`` to the bridge, signed as Twilio signs.

        ``path`` is relative to ``bridge_url`` or absolute. ``signature`` None signs correctly,
        ``"none"`` omits the header, ``"bad"`` sends a wrong one, anything else is sent as is.
        Returns None if the bridge could not be reached.
        """
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
            self.webhooks.append(
                WebhookRecord(kind, url, method, params, status=None, body=str(exc))
            )
            return None
        self.webhooks.append(
            WebhookRecord(
                kind, url, method, params, status=response.status_code, body=response.text
            )
        )
        return response

    def routed(self, kind: str, url: str) -> str:
        """The URL a request for ``url`` really goes to (see ``router``)."""
        return url if self.router is None else self.router(kind, url)

    # -- Carrier (used by calls) ---------------------------------------------------------------
    def _call_params(
        self, sid: str, direction: str, from_: str, to: str, status: str
    ) -> dict[str, str]:
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": sid,
            "CallStatus": status,
            "Called": to,
            "Caller": from_,
            "Direction": direction,
            "From": from_,
            "To": to,
        }

    def post_status(self, call: SimCall, status: str) -> None:
        """Queue the signed status callback for ``status`` (no-op without a callback URL)."""
        if not call.status_callback:
            return
        params = self._call_params(call.sid, call.direction, call.from_, call.to, status)
        params.update(
            {
                "CallbackSource": "call-progress-events",
                "SequenceNumber": str(call.callback_seq),
                "Timestamp": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
            }
        )
        call.callback_seq += 1
        if status in ("completed", "busy", "failed", "no-answer", "canceled"):
            seconds = call.duration_s()
            params.update({"CallDuration": str(seconds), "Duration": str(-(-seconds // 60))})
        self.post_async(call.status_callback, call.status_callback_method, params, "status")

    def post_async(
        self, url: str, method: str, params: Mapping[str, str], kind: str = "callback"
    ) -> None:
        """Queue a signed webhook; the poster thread sends them in order."""
        snapshot = dict(params)

        def job() -> None:
            self.post_webhook(url, snapshot, method=method.upper(), kind=kind)

        self._outbox.put(job)

    def fetch_twiml(
        self, call: SimCall, url: str, method: str, extra: Mapping[str, str] | None = None
    ) -> str | None:
        """Ask the application for TwiML (Url=, <Redirect>, <Connect action>, <Gather action>
        with the input in ``extra``)."""
        params = self._call_params(call.sid, call.direction, call.from_, call.to, call.status)
        params.update(extra or {})
        response = self.post_webhook(url, params, method=method.upper(), kind="twiml")
        if response is None or not response.ok:
            call.notes.append(f"11200: TwiML fetch from {url} failed")
            return None
        return response.text

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

    # -- CallApi (used by the REST server) -------------------------------------------------------
    def _register(self, call: SimCall) -> None:
        with self._lock:
            self._calls[call.sid] = call

    def _call(self, sid: str) -> SimCall:
        call = self.calls.get(sid)
        if call is None:
            path = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}.json"
            raise RestError(404, 20404, f"The requested resource {path} was not found")
        return call

    def create_call(self, form: Form) -> dict[str, Any]:
        """``POST …/Calls.json``: validate like Twilio, then dial on a call thread."""
        if self.create_failure is not None:
            raise self.create_failure
        to, from_ = first(form, "To"), first(form, "From")
        twiml, url = first(form, "Twiml"), first(form, "Url")
        if not to:
            raise RestError(400, 21201, "No 'To' number is specified")
        if not from_:
            raise RestError(400, 21213, "No 'From' number is specified")
        if not twiml and not url:
            raise RestError(400, 21205, "Url parameter is required. Please provide Twiml or Url.")
        if twiml and len(twiml) > MAX_INLINE_TWIML:
            raise RestError(
                400, 32018, "Twiml size exceeded maximum allowed value of 4000 characters"
            )
        events = frozenset(form.get("StatusCallbackEvent", [])) or frozenset({"completed"})
        behaviour = self.dial_behaviours.get(to, self.default_dial)
        machine_detection = first(form, "MachineDetection")
        call = SimCall(
            self,
            new_sid("CA"),
            "outbound-api",
            from_,
            to,
            behaviour=behaviour,
            twiml=None if url else twiml,
            url=url,
            status_callback=first(form, "StatusCallback"),
            status_callback_method=first(form, "StatusCallbackMethod") or "POST",
            status_callback_events=events,
            label="agent",
            machine_detection=machine_detection,
            async_amd=(first(form, "AsyncAmd") or "false").lower() == "true",
            amd_callback=first(form, "AsyncAmdStatusCallback"),
            amd_callback_method=first(form, "AsyncAmdStatusCallbackMethod") or "POST",
        )
        self._register(call)
        resource = call.resource()
        call.start()
        return resource

    def update_call(self, sid: str, form: Form) -> dict[str, Any]:
        """``POST …/Calls/{sid}.json``: Status=completed|canceled, or Twiml=/Url= redirect."""
        call = self._call(sid)
        status, twiml, url = first(form, "Status"), first(form, "Twiml"), first(form, "Url")
        if status is not None:
            if status not in ("completed", "canceled"):
                raise RestError(400, 21218, f"Invalid value for Status: {status}")
            if not call.ended.is_set():
                call.request_end(status)
        elif twiml or url:
            if call.ended.is_set():
                raise RestError(400, 21220, "Call is not in-progress. Cannot redirect.")
            if twiml and len(twiml) > MAX_INLINE_TWIML:
                raise RestError(
                    400, 32018, "Twiml size exceeded maximum allowed value of 4000 characters"
                )
            call.redirect(None if url else twiml, url)
        return call.resource()

    def fetch_call(self, sid: str) -> dict[str, Any]:
        """``GET …/Calls/{sid}.json``."""
        return self._call(sid).resource()

    def list_numbers(self, query: Form) -> dict[str, Any]:
        """``GET …/IncomingPhoneNumbers.json``."""
        return self.numbers.list(query)

    def fetch_number(self, sid: str) -> dict[str, Any]:
        """``GET …/IncomingPhoneNumbers/{sid}.json``."""
        return self.numbers.get(sid)

    def update_number(self, sid: str, form: Form) -> dict[str, Any]:
        """``POST …/IncomingPhoneNumbers/{sid}.json``."""
        return self.numbers.update(sid, form)

    # -- teardown --------------------------------------------------------------------------------
    def close(self) -> None:
        """End every call, stop the REST server and the poster; join all threads. Idempotent."""
        if self._closed:
            return
        for call in self.calls.values():
            call.shutdown()
        self._rest.close()
        self._closed = True
        self._outbox.put(None)
        self._poster.join(_HTTP_TIMEOUT_S + 2.0)

    def __enter__(self) -> TwilioSim:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
