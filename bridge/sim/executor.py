"""The one thread that acts for a simulated call: ring, answer, run its TwiML, end it.

Outbound calls ring for the party's ``answer_delay_s`` and end busy/no-answer/failed or are
answered (then answering machine detection, then the TwiML). The TwiML verbs run in order:
``<Connect><Stream>`` blocks on a :class:`MediaStreamClient`; ``<Gather>`` takes the party's next
scripted answer and posts it to its action; ``<Redirect>`` and actions fetch the next document.
The call ends with a final status.

Other threads (REST updates, the test) only set flags and an interrupt event here; this thread
acts on them, so the call's state has a single writer. The one exception is asynchronous
answering machine detection, whose verdict a timer posts while the TwiML runs, as Twilio does.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING

from bridge.sim import twiml as tw
from bridge.sim.answers import MACHINE_DETECTION_MODES, amd_params, amd_verdict, gather_params
from bridge.sim.media import MediaStreamClient, echo_mixer
from bridge.sim.rest import rfc2822

if TYPE_CHECKING:
    from bridge.sim.call import Carrier, SimCall

logger = logging.getLogger(__name__)

FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
_POLL_S = 0.05
STOP_GRACE_S = 5.0


class CallExecutor:
    """Runs one :class:`SimCall` on its own thread, recording what happens on the call."""

    def __init__(self, call: SimCall, carrier: Carrier) -> None:
        self._call = call
        self._carrier = carrier
        self._lock = threading.Lock()
        self._interrupt = threading.Event()
        self._end_cause: str | None = None
        self._pending: tuple[str | None, str | None] | None = None  # redirect (twiml, url)
        self._final: str | None = None
        self._amd_timer: threading.Timer | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"sim-call-{call.label}", daemon=True
        )

    # -- control (any thread) -----------------------------------------------------------------
    def start(self) -> None:
        """Start the call's thread."""
        self._thread.start()

    def request_end(self, cause: str) -> None:
        """End the call (the first cause given is the one acted on)."""
        with self._lock:
            if self._end_cause is None:
                self._end_cause = cause
        self._interrupt.set()

    def redirect(self, twiml: str | None, url: str | None) -> None:
        """Stop the current verb and run ``twiml`` (or the document at ``url``) instead."""
        with self._lock:
            self._pending = (twiml, url)
        self._interrupt.set()

    def join(self, timeout: float) -> None:
        """Wait for the call's thread to end (no-op if it never started)."""
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the call's life cycle ------------------------------------------------------------------
    def _set_status(self, status: str) -> None:
        call = self._call
        call.status_history.append((status, time.monotonic()))
        event = {"in-progress": "answered"}.get(status, status)
        if status in FINAL_STATUSES or event in call.status_callback_events:
            self._carrier.post_status(call, status)

    def _wait(self, seconds: float) -> bool:
        """Sleep, waking early on an interrupt; True if interrupted."""
        return self._interrupt.wait(max(0.0, seconds))

    def _answer(self) -> None:
        call = self._call
        if not call.answered.is_set():
            call.answered_at = time.time()
            call.answered.set()
            self._set_status("in-progress")

    def _run(self) -> None:
        call = self._call
        try:
            if call.direction == "outbound-api":
                self._dial()
            elif call.initial_twiml is None:
                self._application_error("11200: the voice webhook returned no TwiML")
            else:
                self._execute_all(call.initial_twiml)
        except Exception:  # a thread boundary: record, and end the call below
            logger.exception("call %s executor failed", call.label)
            call.notes.append("internal: executor failed")
        finally:
            self._finish()

    def _dial(self) -> None:
        call = self._call
        self._set_status("initiated")
        self._set_status("ringing")
        if self._wait(call.behaviour.answer_delay_s) and self._end_cause is not None:
            self._final = "canceled"
            return
        if call.behaviour.outcome != "answer":
            self._final = call.behaviour.outcome
            return
        self._answer()
        extra = self._detect_machine()
        document = call.initial_twiml
        if document is None and call.initial_url is not None:
            document = self._carrier.fetch_twiml(call, call.initial_url, "POST", extra)
        if document is not None:
            self._execute_all(document)

    def _finish(self) -> None:
        call = self._call
        if self._amd_timer is not None:
            self._amd_timer.cancel()  # a call that ended before detection reports nothing
            self._amd_timer.join()
        for client in list(call.streams):
            client.stop("shutdown")
            client.join()
        call.ended_at = time.time()
        if self._final is None:
            self._final = "completed" if call.answered.is_set() else "canceled"
        self._set_status(self._final)
        call.ended.set()

    def _detect_machine(self) -> dict[str, str] | None:
        """Answering machine detection after answer: synchronous AMD holds the TwiML until it
        has a verdict (sent with a ``Url`` fetch); asynchronous AMD posts it to its callback
        while the TwiML runs."""
        call = self._call
        mode = call.machine_detection
        if mode is None:
            return None
        if mode not in MACHINE_DETECTION_MODES:
            call.notes.append(f"MachineDetection={mode!r} is not Enable or DetectMessageEnd")
            return None
        delay = call.behaviour.amd_delay_s
        verdict = amd_verdict(mode, call.behaviour.answered_by)
        if not call.async_amd:
            self._wait(delay)
            call.answered_by = verdict
            return {"AnsweredBy": verdict}
        callback, method = call.amd_callback, call.amd_callback_method
        if not callback:
            call.notes.append("21262: asynchronous AMD without AsyncAmdStatusCallback")
            return None

        def report() -> None:
            if call.ended.is_set():
                return
            call.answered_by = verdict
            params = amd_params(self._carrier.account_sid, call.sid, verdict, delay)
            self._carrier.post_async(callback, method, params, "amd")

        self._amd_timer = threading.Timer(delay, report)
        self._amd_timer.daemon = True
        self._amd_timer.start()
        return None

    # -- TwiML ------------------------------------------------------------------------------------
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
                    else (self._carrier.fetch_twiml(self._call, url, "POST") if url else None)
                )
        if self._end_cause is not None:
            self._interrupt.set()

    def _application_error(self, note: str) -> None:
        # What Twilio does when it cannot get usable TwiML: apologise and hang up.
        self._call.notes.append(note)
        self._answer()
        self._call.says.append(tw.Say("We are sorry, an application error has occurred."))

    def _interrupted(self) -> bool:
        return self._end_cause is not None or self._pending is not None

    def _execute(self, document: str) -> str | None:
        """Run one TwiML document; return the next document (action/Redirect) or None."""
        call = self._call
        call.twiml_documents.append(document)
        try:
            verbs = tw.parse_twiml(document)
        except tw.TwimlError as exc:
            self._application_error(f"12100: document parse failure: {exc}")
            return None
        for verb in verbs:
            if self._interrupted():
                return None
            if isinstance(verb, tw.Reject):
                if call.answered.is_set():
                    call.notes.append("<Reject> after the call was answered")
                self._final = "busy" if verb.reason == "busy" else "no-answer"
                return None
            if isinstance(verb, tw.Hangup):
                return None
            if isinstance(verb, tw.Redirect):
                return self._carrier.fetch_twiml(call, verb.url, verb.method)
            self._answer()
            if isinstance(verb, tw.Gather):
                posted, next_document = self._gather(verb)
                if posted:
                    return next_document
                continue
            if isinstance(verb, tw.Connect):
                self._run_stream(verb.stream)
                if verb.action and not self._interrupted():
                    return self._carrier.fetch_twiml(call, verb.action, verb.method)
                continue
            self._run_simple(verb)
        return None

    def _run_simple(self, verb: tw.Verb) -> None:
        """A verb that only takes time (or that this carrier cannot run, noted as Twilio would)."""
        if isinstance(verb, tw.Say):
            self._call.says.append(verb)
            self._wait(len(verb.text) * verb.loop * self._carrier.say_s_per_char)
        elif isinstance(verb, tw.Pause):
            self._wait(verb.length_s)
        elif isinstance(verb, tw.StartStream):
            self._call.notes.append("<Start><Stream> is listen-only: no audio can be played back")
        else:
            tag = getattr(verb, "tag", type(verb).__name__)
            self._call.notes.append(f"unsupported verb <{tag}>")

    def _gather(self, verb: tw.Gather) -> tuple[bool, str | None]:
        """Say the nested verbs, then take the party's next answer. ``(True, document)`` when
        the action was requested (its TwiML replaces this document), ``(False, None)`` when
        nothing was collected and the document goes on with the next verb."""
        call = self._call
        call.gathers.append(verb)
        for nested in verb.nested:
            if self._interrupted():
                return True, None
            if isinstance(nested, tw.Say):
                call.says.append(nested)
                self._wait(len(nested.text) * nested.loop * self._carrier.say_s_per_char)
            else:
                self._wait(nested.length_s)
        answers = call.behaviour.gather_answers
        answer = answers[len(call.gathers) - 1] if len(call.gathers) <= len(answers) else None
        fields = gather_params(verb, answer)
        call.gather_results.append(fields)
        if fields is None:
            if self._wait(verb.timeout_s * self._carrier.gather_wait_scale):
                return True, None
            if not verb.action_on_empty_result:
                return False, None
            fields = {}
        if not verb.action:
            call.notes.append("<Gather> without action: Twilio would re-request this document")
            return True, None
        return True, self._carrier.fetch_twiml(call, verb.action, verb.method, fields)

    # -- <Connect><Stream> ---------------------------------------------------------------------
    def _stream_event(self, spec: tw.StreamSpec, client: MediaStreamClient, event: str) -> None:
        if spec.status_callback:
            self._carrier.post_async(
                spec.status_callback,
                spec.status_callback_method or "POST",
                {
                    "AccountSid": self._carrier.account_sid,
                    "CallSid": self._call.sid,
                    "StreamSid": client.stream_sid,
                    "StreamName": spec.name or client.stream_sid,
                    "StreamEvent": event,
                    "Timestamp": rfc2822(time.time()) or "",
                },
            )

    def _run_stream(self, spec: tw.StreamSpec) -> None:
        call = self._call
        if spec.track not in (None, "inbound_track"):
            call.notes.append(f"31941: <Stream track={spec.track!r}> on <Connect>")
        behaviour = call.behaviour
        client = MediaStreamClient(
            spec.url,
            connect_url=self._carrier.routed(f"stream:{call.label}", spec.url),
            auth_token=self._carrier.auth_token,
            account_sid=self._carrier.account_sid,
            call_sid=call.sid,
            parameters=spec.parameters,
            audio=behaviour.audio,
            inbound_filter=behaviour.inbound_filter
            or (echo_mixer(behaviour.echo_gain) if behaviour.echo_gain else None),
            echo_delay_s=behaviour.echo_delay_s,
            stop_reading_after_s=behaviour.stop_reading_after_s,
            label=call.label,
        )
        if client.dropped_query:
            call.notes.append(f"stream URL query {client.dropped_query!r} dropped by Twilio")
        call.streams.append(client)
        if not client.open():
            call.notes.append(f"31920: stream handshake failed: {client.handshake_error}")
            self._stream_event(spec, client, "stream-error")
            return
        self._stream_event(spec, client, "stream-started")
        start = time.monotonic()
        hangup_at = start + behaviour.hangup_after_s if behaviour.hangup_after_s else math.inf
        stop_asked: float | None = None
        while not client.closed.wait(_POLL_S):
            now = time.monotonic()
            if stop_asked is not None:
                if now - stop_asked > STOP_GRACE_S:
                    break  # the bridge never finished the close handshake; give up
                continue
            if now >= hangup_at:
                self.request_end("hangup")
            elif now - start > self._carrier.max_call_s:
                self.request_end("max-duration")
            if self._interrupted():
                client.stop(self._end_cause or "redirect")
                stop_asked = now
        client.join()
        if client.closed_by_server.is_set():
            call.stream_closed_by_server.set()
        self._stream_event(spec, client, "stream-stopped")
