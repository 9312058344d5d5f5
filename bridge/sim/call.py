"""One simulated phone call: its dialled party, its status life cycle and its TwiML executor.

Each call runs one executor thread: ring (outbound), answer, run the TwiML verbs in order
(``<Connect><Stream>`` blocks on a :class:`MediaStreamClient`; ``<Gather>`` takes the party's
next scripted answer and posts it to its action), then end with a final status. Other threads
(REST updates, the test) only set flags and an interrupt event; the executor acts on them, so
call state has a single writer. The one exception is asynchronous answering machine detection,
whose verdict a timer posts while the TwiML runs, as Twilio does.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bridge.sim import twiml as tw
from bridge.sim.answers import (
    MACHINE_DETECTION_MODES,
    GatherAnswer,
    amd_params,
    amd_verdict,
    gather_params,
)
from bridge.sim.media import HeardFrame, InboundFilter, MediaStreamClient, echo_mixer
from bridge.sim.rest import API_VERSION, rfc2822

logger = logging.getLogger(__name__)

Outcome = Literal["answer", "busy", "no-answer", "failed"]
FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
_POLL_S = 0.05
_STOP_GRACE_S = 5.0


@dataclass(frozen=True, slots=True)
class DialBehaviour:
    """How a dialled party behaves: ring ``answer_delay_s``, then ``outcome``.

    Once answered it speaks ``audio`` (8 kHz μ-law, then line silence), optionally hears itself
    back (``echo_gain`` of what it hears, ``echo_delay_s`` late; or any ``inbound_filter``) and
    hangs up after ``hangup_after_s`` if set; with ``stop_reading_after_s`` its stream stops
    reading the socket then (a wedged peer) while still sending. Each ``<Gather>`` gets the next of
    ``gather_answers`` (None, or none left: silence). With machine detection on, Twilio takes
    ``amd_delay_s`` to decide the party is ``answered_by`` (human, machine_start, fax, …).
    """

    outcome: Outcome = "answer"
    answer_delay_s: float = 0.1
    audio: bytes = b""
    echo_gain: float = 0.0
    echo_delay_s: float = 0.0
    hangup_after_s: float | None = None
    stop_reading_after_s: float | None = None
    inbound_filter: InboundFilter | None = None  # overrides echo_gain when set
    gather_answers: tuple[GatherAnswer | None, ...] = ()
    answered_by: str = "human"
    amd_delay_s: float = 0.5


class Carrier(Protocol):
    """What a call needs from the Twilio stand-in."""

    account_sid: str
    auth_token: str
    max_call_s: float
    say_s_per_char: float
    gather_wait_scale: float

    def post_status(self, call: SimCall, status: str) -> None:
        """Queue a signed status callback for ``call``."""

    def routed(self, kind: str, url: str) -> str:
        """Where a request Twilio signs for ``url`` is really sent (a load balancer's pick)."""

    def post_async(
        self, url: str, method: str, params: Mapping[str, str], kind: str = "callback"
    ) -> None:
        """Queue a signed webhook."""

    def fetch_twiml(
        self, call: SimCall, url: str, method: str, extra: Mapping[str, str] | None = None
    ) -> str | None:
        """Request TwiML from the application (signed), with ``extra`` fields; None on
        failure."""


class SimCall:
    """A call leg. ``said`` lists ``<Say>`` texts, ``says`` the parsed verbs with attributes."""

    def __init__(
        self,
        carrier: Carrier,
        sid: str,
        direction: str,
        from_: str,
        to: str,
        *,
        behaviour: DialBehaviour,
        twiml: str | None = None,
        url: str | None = None,
        status_callback: str | None = None,
        status_callback_method: str = "POST",
        status_callback_events: frozenset[str] = frozenset(),
        label: str = "",
        machine_detection: str | None = None,
        async_amd: bool = False,
        amd_callback: str | None = None,
        amd_callback_method: str = "POST",
    ) -> None:
        self.sid = sid
        self.direction = direction
        self.from_ = from_
        self.to = to
        self.behaviour = behaviour
        self.label = label or sid[-6:]
        self.status_callback = status_callback
        self.status_callback_method = status_callback_method
        self.status_callback_events = status_callback_events
        self.callback_seq = 0
        self.created_at = time.time()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.status_history: list[tuple[str, float]] = [("queued", time.monotonic())]
        self.says: list[tw.Say] = []
        self.twiml_documents: list[str] = []
        self.streams: list[MediaStreamClient] = []
        self.notes: list[str] = []
        self.gathers: list[tw.Gather] = []  # every <Gather> run, in order
        self.gather_results: list[dict[str, str] | None] = []  # what each one posted
        self.answered_by: str | None = None  # AMD's verdict, once reported
        self.machine_detection = machine_detection
        self.async_amd = async_amd
        self.amd_callback = amd_callback
        self.amd_callback_method = amd_callback_method
        self._amd_timer: threading.Timer | None = None
        self.answered = threading.Event()
        self.ended = threading.Event()
        self.stream_closed_by_server = threading.Event()
        self._carrier = carrier
        self._initial_twiml = twiml
        self._initial_url = url
        self._lock = threading.Lock()
        self._interrupt = threading.Event()
        self._end_cause: str | None = None
        self._pending: tuple[str | None, str | None] | None = None  # redirect (twiml, url)
        self._final: str | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"sim-call-{self.label}", daemon=True
        )

    # -- observation -----------------------------------------------------------------------
    @property
    def status(self) -> str:
        """The current call status (queued … completed)."""
        return self.status_history[-1][0]

    @property
    def initial_twiml(self) -> str | None:
        """The TwiML the call was created with (REST ``Twiml``), executed once answered."""
        return self._initial_twiml

    @property
    def said(self) -> list[str]:
        """Texts of every ``<Say>`` executed on this call."""
        return [say.text for say in self.says]

    @property
    def stream(self) -> MediaStreamClient | None:
        """The latest media stream, if any."""
        return self.streams[-1] if self.streams else None

    @property
    def heard_frames(self) -> list[HeardFrame]:
        """Every media frame the bridge sent to this leg, across its streams."""
        return [frame for stream in list(self.streams) for frame in stream.heard_frames]

    @property
    def marks_sent_back(self) -> list[tuple[str, float]]:
        """Every mark echoed to the bridge (name, monotonic time)."""
        return [mark for stream in list(self.streams) for mark in stream.marks_sent_back]

    @property
    def violations(self) -> list[str]:
        """Protocol problems Twilio would log, from the call and all its streams."""
        return self.notes + [v for stream in list(self.streams) for v in stream.violations]

    def heard_ulaw(self) -> bytes:
        """All μ-law audio the bridge sent to this leg, in order."""
        return b"".join(frame.data for frame in self.heard_frames)

    def wait_ended(self, timeout: float = 5.0) -> bool:
        """Wait until the call has its final status."""
        return self.ended.wait(timeout)

    def resource(self) -> dict[str, Any]:
        """The call as Twilio's REST API renders it."""
        account = self._carrier.account_sid
        uri = f"/{API_VERSION}/Accounts/{account}/Calls/{self.sid}.json"
        return {
            "sid": self.sid,
            "account_sid": account,
            "parent_call_sid": None,
            "date_created": rfc2822(self.created_at),
            "date_updated": rfc2822(time.time()),
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from_,
            "from_formatted": self.from_,
            "phone_number_sid": None,
            "status": self.status,
            "start_time": rfc2822(self.answered_at),
            "end_time": rfc2822(self.ended_at),
            "duration": str(self.duration_s()) if self.ended_at else None,
            "price": None,
            "price_unit": "USD",
            "direction": self.direction,
            "answered_by": self.answered_by,
            "api_version": API_VERSION,
            "forwarded_from": None,
            "group_sid": None,
            "caller_name": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": uri,
            "subresource_uris": {
                name: uri.replace(".json", f"/{name}.json")
                for name in (
                    "notifications",
                    "recordings",
                    "payments",
                    "events",
                    "siprec",
                    "streams",
                    "transcriptions",
                    "user_defined_message_subscriptions",
                    "user_defined_messages",
                )
            },
        }

    def duration_s(self) -> int:
        """Whole seconds from answer to end (rounded up here)."""
        if self.answered_at is None:
            return 0
        return math.ceil((self.ended_at or time.time()) - self.answered_at)

    # -- control (any thread) -----------------------------------------------------------------
    def start(self) -> None:
        """Start the executor thread."""
        self._thread.start()

    def hangup(self) -> None:
        """The party hangs up: its stream gets ``stop`` and closes; the call completes."""
        self._request_end("hangup")

    def request_end(self, api_status: str) -> None:
        """REST ``Status=completed|canceled``; canceled only acts before answer."""
        if api_status == "canceled" and self.answered.is_set():
            return
        self._request_end(f"api-{api_status}")

    def redirect(self, twiml: str | None, url: str | None) -> None:
        """REST ``Twiml=`` / ``Url=``: stop the current verb and run the new document."""
        with self._lock:
            self._pending = (twiml, url)
        self._interrupt.set()

    def shutdown(self) -> None:
        """End the call at once (stand-in teardown) and join its threads."""
        self._request_end("shutdown")
        if self._thread.is_alive():
            self._thread.join(_STOP_GRACE_S + 2.0)

    def _request_end(self, cause: str) -> None:
        with self._lock:
            if self._end_cause is None:
                self._end_cause = cause
        self._interrupt.set()

    # -- executor ------------------------------------------------------------------------------
    def _set_status(self, status: str) -> None:
        self.status_history.append((status, time.monotonic()))
        event = {"in-progress": "answered"}.get(status, status)
        if status in FINAL_STATUSES or event in self.status_callback_events:
            self._carrier.post_status(self, status)

    def _wait(self, seconds: float) -> bool:
        """Sleep, waking early on an interrupt; True if interrupted."""
        return self._interrupt.wait(max(0.0, seconds))

    def _answer(self) -> None:
        if not self.answered.is_set():
            self.answered_at = time.time()
            self.answered.set()
            self._set_status("in-progress")

    def _run(self) -> None:
        try:
            if self.direction == "outbound-api":
                self._dial()
            elif self._initial_twiml is None:
                self._application_error("11200: the voice webhook returned no TwiML")
            else:
                self._execute_all(self._initial_twiml)
        except Exception:  # a thread boundary: record, and end the call below
            logger.exception("call %s executor failed", self.label)
            self.notes.append("internal: executor failed")
        finally:
            self._finish()

    def _dial(self) -> None:
        self._set_status("initiated")
        self._set_status("ringing")
        if self._wait(self.behaviour.answer_delay_s) and self._end_cause is not None:
            self._final = "canceled"
            return
        if self.behaviour.outcome != "answer":
            self._final = self.behaviour.outcome
            return
        self._answer()
        extra = self._detect_machine()
        document = self._initial_twiml
        if document is None and self._initial_url is not None:
            document = self._carrier.fetch_twiml(self, self._initial_url, "POST", extra)
        if document is not None:
            self._execute_all(document)

    def _execute_all(self, document: str | None) -> None:
        while document is not None and self._end_cause is None:
            document = self._execute(document)
            with self._lock:
                pending, self._pending = self._pending, None
                self._interrupt.clear()
            if pending is not None and self._end_cause is None:
                twiml, url = pending
                document = (
                    twiml
                    if twiml is not None
                    else (self._carrier.fetch_twiml(self, url, "POST") if url else None)
                )
        if self._end_cause is not None:
            self._interrupt.set()

    def _application_error(self, note: str) -> None:
        # What Twilio does when it cannot get usable TwiML: apologise and hang up.
        self.notes.append(note)
        self._answer()
        self.says.append(tw.Say("We are sorry, an application error has occurred."))

    def _interrupted(self) -> bool:
        return self._end_cause is not None or self._pending is not None

    def _execute(self, document: str) -> str | None:
        """Run one TwiML document; return the next document (action/Redirect) or None."""
        self.twiml_documents.append(document)
        try:
            verbs = tw.parse_twiml(document)
        except tw.TwimlError as exc:
            self._application_error(f"12100: document parse failure: {exc}")
            return None
        for verb in verbs:
            if self._interrupted():
                return None
            if isinstance(verb, tw.Reject):
                if self.answered.is_set():
                    self.notes.append("<Reject> after the call was answered")
                self._final = "busy" if verb.reason == "busy" else "no-answer"
                return None
            if isinstance(verb, tw.Hangup):
                return None
            if isinstance(verb, tw.Redirect):
                return self._carrier.fetch_twiml(self, verb.url, verb.method)
            self._answer()
            if isinstance(verb, tw.Gather):
                posted, next_document = self._gather(verb)
                if posted:
                    return next_document
                continue
            if isinstance(verb, tw.Connect):
                self._run_stream(verb.stream)
                if verb.action and not self._interrupted():
                    return self._carrier.fetch_twiml(self, verb.action, verb.method)
                continue
            self._run_simple(verb)
        return None

    def _run_simple(self, verb: tw.Verb) -> None:
        """A verb that only takes time (or that this carrier cannot run, noted as Twilio would)."""
        if isinstance(verb, tw.Say):
            self.says.append(verb)
            self._wait(len(verb.text) * verb.loop * self._carrier.say_s_per_char)
        elif isinstance(verb, tw.Pause):
            self._wait(verb.length_s)
        elif isinstance(verb, tw.StartStream):
            self.notes.append("<Start><Stream> is listen-only: no audio can be played back")
        else:
            self.notes.append(f"unsupported verb <{getattr(verb, 'tag', type(verb).__name__)}>")

    def _gather(self, verb: tw.Gather) -> tuple[bool, str | None]:
        """Say the nested verbs, then take the party's next answer. ``(True, document)`` when
        the action was requested (its TwiML replaces this document), ``(False, None)`` when
        nothing was collected and the document goes on with the next verb."""
        self.gathers.append(verb)
        for nested in verb.nested:
            if self._interrupted():
                return True, None
            if isinstance(nested, tw.Say):
                self.says.append(nested)
                self._wait(len(nested.text) * nested.loop * self._carrier.say_s_per_char)
            else:
                self._wait(nested.length_s)
        answers = self.behaviour.gather_answers
        answer = answers[len(self.gathers) - 1] if len(self.gathers) <= len(answers) else None
        fields = gather_params(verb, answer)
        self.gather_results.append(fields)
        if fields is None:
            if self._wait(verb.timeout_s * self._carrier.gather_wait_scale):
                return True, None
            if not verb.action_on_empty_result:
                return False, None
            fields = {}
        if not verb.action:
            self.notes.append("<Gather> without action: Twilio would re-request this document")
            return True, None
        return True, self._carrier.fetch_twiml(self, verb.action, verb.method, fields)

    def _detect_machine(self) -> dict[str, str] | None:
        """Answering machine detection after answer: synchronous AMD holds the TwiML until it
        has a verdict (sent with a ``Url`` fetch); asynchronous AMD posts it to its callback
        while the TwiML runs."""
        mode = self.machine_detection
        if mode is None:
            return None
        if mode not in MACHINE_DETECTION_MODES:
            self.notes.append(f"MachineDetection={mode!r} is not Enable or DetectMessageEnd")
            return None
        delay = self.behaviour.amd_delay_s
        verdict = amd_verdict(mode, self.behaviour.answered_by)
        if not self.async_amd:
            self._wait(delay)
            self.answered_by = verdict
            return {"AnsweredBy": verdict}
        callback, method = self.amd_callback, self.amd_callback_method
        if not callback:
            self.notes.append("21262: asynchronous AMD without AsyncAmdStatusCallback")
            return None

        def report() -> None:
            if self.ended.is_set():
                return
            self.answered_by = verdict
            params = amd_params(self._carrier.account_sid, self.sid, verdict, delay)
            self._carrier.post_async(callback, method, params, "amd")

        self._amd_timer = threading.Timer(delay, report)
        self._amd_timer.daemon = True
        self._amd_timer.start()
        return None

    def _stream_event(self, spec: tw.StreamSpec, client: MediaStreamClient, event: str) -> None:
        if spec.status_callback:
            self._carrier.post_async(
                spec.status_callback,
                spec.status_callback_method or "POST",
                {
                    "AccountSid": self._carrier.account_sid,
                    "CallSid": self.sid,
                    "StreamSid": client.stream_sid,
                    "StreamName": spec.name or client.stream_sid,
                    "StreamEvent": event,
                    "Timestamp": rfc2822(time.time()) or "",
                },
            )

    def _run_stream(self, spec: tw.StreamSpec) -> None:
        if spec.track not in (None, "inbound_track"):
            self.notes.append(f"31941: <Stream track={spec.track!r}> on <Connect>")
        behaviour = self.behaviour
        client = MediaStreamClient(
            spec.url,
            connect_url=self._carrier.routed(f"stream:{self.label}", spec.url),
            auth_token=self._carrier.auth_token,
            account_sid=self._carrier.account_sid,
            call_sid=self.sid,
            parameters=spec.parameters,
            audio=behaviour.audio,
            inbound_filter=behaviour.inbound_filter
            or (echo_mixer(behaviour.echo_gain) if behaviour.echo_gain else None),
            echo_delay_s=behaviour.echo_delay_s,
            stop_reading_after_s=behaviour.stop_reading_after_s,
            label=self.label,
        )
        if client.dropped_query:
            self.notes.append(f"stream URL query {client.dropped_query!r} dropped by Twilio")
        self.streams.append(client)
        if not client.open():
            self.notes.append(f"31920: stream handshake failed: {client.handshake_error}")
            self._stream_event(spec, client, "stream-error")
            return
        self._stream_event(spec, client, "stream-started")
        start = time.monotonic()
        hangup_at = start + behaviour.hangup_after_s if behaviour.hangup_after_s else math.inf
        stop_asked: float | None = None
        while not client.closed.wait(_POLL_S):
            now = time.monotonic()
            if stop_asked is not None:
                if now - stop_asked > _STOP_GRACE_S:
                    break  # the bridge never finished the close handshake; give up
                continue
            if now >= hangup_at:
                self._request_end("hangup")
            elif now - start > self._carrier.max_call_s:
                self._request_end("max-duration")
            if self._interrupted():
                client.stop(self._end_cause or "redirect")
                stop_asked = now
        client.join()
        if client.closed_by_server.is_set():
            self.stream_closed_by_server.set()
        self._stream_event(spec, client, "stream-stopped")

    def _finish(self) -> None:
        if self._amd_timer is not None:
            self._amd_timer.cancel()  # a call that ended before detection reports nothing
            self._amd_timer.join()
        for client in list(self.streams):
            client.stop("shutdown")
            client.join()
        self.ended_at = time.time()
        if self._final is None:
            self._final = "completed" if self.answered.is_set() else "canceled"
        self._set_status(self._final)
        self.ended.set()
