"""Call control: answering, dialling the agent, status callbacks, stream binding, teardown.

Every call's teardown runs once, in its own short-lived thread (it makes REST requests), and
is total: both sessions closed, both legs' sockets closed, the other party's call ended
through the REST API, every thread of the call joined. A fault in one call's thread is caught
at that thread's boundary and ends that call only.
"""

from __future__ import annotations

import logging
import threading
import time

from bridge.audio import Pcm16
from bridge.call import LISTENER_OF, Call, EndReason
from bridge.engine import Direction, Engine, SessionSpec, TextKind
from bridge.metrics import Metrics
from bridge.prompts import PromptName, prompt
from bridge.settings import Settings
from bridge.twilio_media import Start
from bridge.twilio_rest import FINAL_STATUSES, DialRequest, TwilioRest, TwilioRestError
from bridge.twiml import PARAM_CALL, PARAM_LEG, connect_stream, say_and_hang_up

log = logging.getLogger(__name__)
MEDIA_PATH = "/media"
STATUS_PATH = "/twilio/status"
# The agent's stream can only start after Twilio answered our create request; if its `start`
# races the REST response, wait this long for the CallSid before refusing the stream.
AGENT_SID_WAIT_S = 5.0
SESSION_JOIN_S = 5.0
_AGENT_FAILURE: dict[str, EndReason] = {
    "busy": "agent_busy",
    "no-answer": "agent_no_answer",
    "failed": "agent_failed",
    "canceled": "agent_canceled",
}


class StreamRejected(Exception):
    """A Media Stream `start` that does not belong to a live call of ours."""


class _DirectionSink:
    """Delivers one session's output to the listening leg and the call's transcript."""

    def __init__(self, control: CallControl, call: Call, direction: Direction) -> None:
        self._control = control
        self._call = call
        self._direction = direction
        self._leg = call.legs[LISTENER_OF[direction]]

    def on_audio(self, audio: Pcm16, received_at: float) -> None:
        self._leg.play(audio, received_at)

    def on_text(self, kind: TextKind, text: str) -> None:
        self._call.add_text(self._direction, kind, text)

    def on_failed(self, reason: str) -> None:
        self._call.log.error("%s translation failed: %s", self._direction, reason)
        opened = "could not open" in reason
        self._control.end(
            self._call,
            "engine_unavailable" if opened else "engine_failed",
            notice="interpreter_unavailable",
        )


class CallControl:
    def __init__(
        self, settings: Settings, rest: TwilioRest, engine: Engine, metrics: Metrics
    ) -> None:
        self._settings = settings
        self._rest = rest
        self._engine = engine
        self._metrics = metrics
        self._lock = threading.Lock()
        self._by_sid: dict[str, Call] = {}
        self._teardowns: list[threading.Thread] = []

    # -- lookups ----------------------------------------------------------------------------

    def find(self, call_sid: str) -> Call | None:
        with self._lock:
            return self._by_sid.get(call_sid)

    def active_calls(self) -> list[Call]:
        with self._lock:
            return list({id(c): c for c in self._by_sid.values()}.values())

    # -- the voice webhook ------------------------------------------------------------------

    def answer(self, caller_sid: str, caller_number: str, dialled_number: str) -> str:
        """Register the call, start dialling and translating, return the caller's TwiML."""
        s = self._settings
        with self._lock:
            call = self._by_sid.get(caller_sid)
            is_new = call is None
            if call is None:
                call = Call(
                    caller_sid=caller_sid,
                    caller_number=caller_number,
                    dialled_number=dialled_number,
                    caller_language=s.caller_language,
                    agent_language=s.agent_language,
                    metrics=self._metrics,
                )
                self._by_sid[caller_sid] = call
        if is_new:
            # Twilio may retry a slow webhook; a retry gets the same TwiML and no second dial.
            self._metrics.calls_started.inc()
            self._metrics.active_calls.inc()
            call.log.info(
                "answered; dialling the agent (languages %s/%s, engine %s)",
                s.caller_language,
                s.agent_language,
                self._engine.name,
            )
            threading.Thread(
                target=self._setup, args=(call,), name=f"call-setup:{caller_sid[-6:]}", daemon=True
            ).start()
        return connect_stream(
            s.stream_url(MEDIA_PATH), caller_sid, "caller", prompt("connecting", s.caller_language)
        )

    def _setup(self, call: Call) -> None:
        s = self._settings
        try:
            # Sessions open now, while the caller hears the greeting and the agent's phone
            # rings, so nobody's first words are lost to connection set-up.
            for direction, language in (
                ("caller_to_agent", s.agent_language),
                ("agent_to_caller", s.caller_language),
            ):
                spec = SessionSpec(call.sid, direction, language)  # type: ignore[arg-type]
                session = self._engine.session(spec, _DirectionSink(self, call, spec.direction))
                call.sessions[spec.direction] = session
                session.start()
            agent_twiml = connect_stream(
                s.stream_url(MEDIA_PATH), call.sid, "agent", prompt("agent_intro", s.agent_language)
            )
            agent_sid = self._rest.dial(
                DialRequest(
                    to=s.agent_number,
                    from_=s.agent_caller_id or call.dialled_number,
                    twiml=agent_twiml,
                    status_callback=s.public_url(STATUS_PATH),
                    timeout_s=s.agent_dial_timeout_s,
                )
            )
        except TwilioRestError as exc:
            call.log.error("could not dial the agent: %s", exc)
            self.end(call, "dial_failed", notice="agent_unavailable")
            return
        except Exception:  # thread boundary: end this call, keep serving
            call.log.exception("call set-up failed")
            self.end(call, "dial_failed", notice="agent_unavailable")
            return
        with self._lock:
            self._by_sid[agent_sid] = call
        if not call.set_agent_sid(agent_sid):
            # The caller left while we were dialling: cancel the agent's ringing phone.
            self._rest_quietly(
                call, "cancel the agent", self._rest.hang_up, agent_sid, answered=False
            )
            return
        call.log.info("agent leg %s dialled", agent_sid)

    # -- status callbacks -------------------------------------------------------------------

    def on_status(self, call_sid: str, status: str) -> bool:
        """A call-progress callback; False when the call is not one of ours (a no-op)."""
        call = self.find(call_sid)
        if call is None:
            return False
        role = call.role_of(call_sid)
        call.log.info("%s leg status %s", role, status)
        if role == "agent":
            with call.lock:
                call.agent_status = status
                if status == "in-progress":
                    call.agent_answered = True
                if status in FINAL_STATUSES:
                    call.agent_live = False
            if status in _AGENT_FAILURE:
                self.end(call, _AGENT_FAILURE[status], notice="agent_unavailable")
            elif status == "completed":
                self.end(call, "agent_hung_up")
        elif role == "caller" and status in FINAL_STATUSES:
            with call.lock:
                call.caller_live = False
            self.end(call, "caller_hung_up")
        return True

    # -- Media Streams ----------------------------------------------------------------------

    def bind_stream(self, start: Start) -> tuple[Call, str]:
        """Match a stream's `start` to a live call; returns the call and the leg's role."""
        if start.account_sid != self._settings.twilio_account_sid:
            raise StreamRejected("start.accountSid is not this account")
        bridge_sid = start.custom_parameters.get(PARAM_CALL, "")
        call = self.find(start.call_sid) or self.find(bridge_sid)
        if call is None:
            raise StreamRejected("start names no call this bridge answered or created")
        if start.call_sid != call.sid:
            call.agent_sid_known.wait(AGENT_SID_WAIT_S)
        role = call.role_of(start.call_sid)
        if role is None:
            raise StreamRejected("start.callSid is not a leg of the named call")
        if bridge_sid != call.sid or start.custom_parameters.get(PARAM_LEG) != role:
            raise StreamRejected("stream parameters do not match the call")
        if call.ended.is_set():
            raise StreamRejected("the call has ended")
        return call, role

    def on_stream_ended(self, call: Call, role: str) -> None:
        """A leg's stream stopped or its socket closed: that party is gone."""
        with call.lock:
            if role == "caller":
                call.caller_live = False
            else:
                call.agent_live = False
        self.end(call, "caller_hung_up" if role == "caller" else "agent_hung_up")

    # -- teardown ---------------------------------------------------------------------------

    def end(self, call: Call, reason: EndReason, notice: PromptName | None = None) -> None:
        """End the whole call once, whoever asks first; returns at once."""
        if not call.mark_ended(reason):
            return
        call.log.info("ending: %s", reason)
        thread = threading.Thread(
            target=self._teardown,
            args=(call, notice),
            name=f"call-teardown:{call.sid[-6:]}",
            daemon=True,
        )
        with self._lock:
            self._teardowns = [t for t in self._teardowns if t.is_alive()]
            self._teardowns.append(thread)
        thread.start()

    def _teardown(self, call: Call, notice: PromptName | None) -> None:
        for session in list(call.sessions.values()):
            session.close()
        with call.lock:
            caller_live, agent_sid = call.caller_live, call.agent_sid
            agent_live, agent_answered = call.agent_live, call.agent_answered
        if notice is not None and caller_live:
            twiml = say_and_hang_up(prompt(notice, call.caller_language))
            if not self._rest_quietly(
                call, "tell the caller", self._rest.redirect, call.sid, twiml
            ):
                self._rest_quietly(
                    call, "hang up the caller", self._rest.hang_up, call.sid, answered=True
                )
        elif caller_live:
            self._rest_quietly(
                call, "hang up the caller", self._rest.hang_up, call.sid, answered=True
            )
        if agent_sid is not None and agent_live:
            self._rest_quietly(
                call, "hang up the agent", self._rest.hang_up, agent_sid, answered=agent_answered
            )
        for leg in call.legs.values():
            leg.close()
        deadline = time.monotonic() + SESSION_JOIN_S
        for session in list(call.sessions.values()):
            join = getattr(session, "join", None)
            if join is not None:
                join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for sid in (call.sid, agent_sid):
                if sid is not None and self._by_sid.get(sid) is call:
                    del self._by_sid[sid]
        self._metrics.active_calls.dec()
        self._metrics.calls_ended.labels(call.end_reason or "unknown").inc()
        call.log.info(
            "ended (%s) after %.1f s", call.end_reason, time.monotonic() - call.started_at
        )

    def _rest_quietly(
        self, call: Call, what: str, fn: object, *args: object, **kwargs: object
    ) -> bool:
        try:
            fn(*args, **kwargs)  # type: ignore[operator]
        except TwilioRestError as exc:
            call.log.warning("could not %s: %s", what, exc)
            return False
        return True

    def shutdown(self, timeout: float) -> None:
        """End every call (process stopping) and wait for their teardowns."""
        for call in self.active_calls():
            self.end(call, "shutdown")
        deadline = time.monotonic() + timeout
        with self._lock:
            pending = list(self._teardowns)
        for thread in pending:
            thread.join(max(0.0, deadline - time.monotonic()))
