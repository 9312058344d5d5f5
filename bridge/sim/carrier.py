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

Here: the calls by SID and the REST API's view of them (create, update, fetch); how requests are
signed and sent is :mod:`bridge.sim.webhooks`, a call's life :mod:`bridge.sim.call`.

Concurrency: the REST server has its own threads; each call has one executor thread; each stream
has a writer and a reader; status callbacks go out in order from one poster thread. ``close()``
ends every call and joins every thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from bridge.sim.answers import GatherAnswer
from bridge.sim.call import DialBehaviour, SimCall
from bridge.sim.media import InboundFilter
from bridge.sim.numbers import PhoneNumbers
from bridge.sim.rest import API_VERSION, Form, RestError, RestRequest, RestServer, first, new_sid
from bridge.sim.webhooks import WebhookRecord, WebhookSender, call_params

__all__ = ["DialBehaviour", "GatherAnswer", "SimCall", "TwilioSim"]

MAX_INLINE_TWIML = 4000


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
        # Fault injection: every POST …/Calls.json fails with this error while it is set.
        self.create_failure: RestError | None = None
        self._calls: dict[str, SimCall] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._webhooks = WebhookSender(auth_token, self.bridge_url)
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
    def webhooks(self) -> list[WebhookRecord]:
        """Every request made to the application, in order (the live list)."""
        return self._webhooks.records

    @property
    def router(self) -> Callable[[str, str], str] | None:
        """A load balancer in front of several bridges: (kind, url) → the URL really requested,
        for kinds "voice", "status", "twiml", "amd", "callback", "stream:caller",
        "stream:agent". Requests stay signed for the URL Twilio was given. None: to ``url``."""
        return self._webhooks.router

    @router.setter
    def router(self, router: Callable[[str, str], str] | None) -> None:
        self._webhooks.router = router

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
        return self._webhooks.post(path, params, signature, method=method, kind=kind)

    def routed(self, kind: str, url: str) -> str:
        """The URL a request for ``url`` really goes to (see ``router``)."""
        return self._webhooks.routed(kind, url)

    # -- Carrier (used by calls) ---------------------------------------------------------------
    def _call_params(
        self, sid: str, direction: str, from_: str, to: str, status: str
    ) -> dict[str, str]:
        return call_params(
            self.account_sid, sid, direction=direction, from_=from_, to=to, status=status
        )

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
        self._webhooks.post_async(url, method, params, kind)

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
        self._webhooks.close()

    def __enter__(self) -> TwilioSim:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
