"""Call control: admitting, dialling the agent, status callbacks, stream binding, limits, teardown.

Every call's teardown runs once, in its own short-lived thread (it makes REST requests), and
is total: both sessions closed, both legs' sockets closed, the other party's call ended
through the REST API, every thread of the call joined. A fault in one call's thread is caught
at that thread's boundary and ends that call only. One watchdog thread per process enforces
``MAX_CALL_SECONDS``; shutdown drains calls for ``SHUTDOWN_GRACE_SECONDS``, then ends the rest
with a notice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from bridge.audio import Pcm16
from bridge.call import LISTENER_OF, Call, EndReason
from bridge.engine import Direction, Engine, SessionSpec, TextKind, is_out_of_credit
from bridge.events import AgentAnswered, AgentDialled, CallEnded, CallStarted, EventHub
from bridge.leg import LegConfig, Role
from bridge.metrics import Metrics
from bridge.prompts import Prompt, PromptBook, PromptName, load_prompts
from bridge.settings import Settings
from bridge.twilio_media import Start
from bridge.twilio_rest import FINAL_STATUSES, DialRequest, TwilioRest, TwilioRestError
from bridge.twiml import PARAM_CALL, PARAM_LEG, connect_stream, say_and_hang_up

log = logging.getLogger(__name__)
MEDIA_PATH = "/media"
STATUS_PATH = "/twilio/status"
AMD_PATH = "/twilio/amd"
# The agent's stream can only start after Twilio answered our create request; if its `start`
# races the REST response, wait this long for the CallSid before refusing the stream.
AGENT_SID_WAIT_S = 5.0
SESSION_JOIN_S = 8.0
# How long a teardown owing the caller a notice waits for the greeting TwiML to have run.
CALLER_TWIML_WAIT_S = 10.0
# The time-limit notice goes out this long before MAX_CALL_SECONDS, so it is heard in full
# and the call still ends about when the limit says. The lead is at most a quarter of the
# limit: a fixed lead longer than a short limit would end every call the moment it starts.
TIME_LIMIT_NOTICE_S = 10.0
TIME_LIMIT_NOTICE_SHARE = 0.25
WATCHDOG_PERIOD_S = 0.5
_AGENT_FAILURE: dict[str, EndReason] = {
    "busy": "agent_busy",
    "no-answer": "agent_no_answer",
    "failed": "agent_failed",
    "canceled": "agent_canceled",
}
# AnsweredBy values of Twilio's answering machine detection that mean nobody will talk: an
# agent's voicemail is as good as no answer. ("human" and "unknown" let the call go on.)
MACHINE_ANSWERS = frozenset(
    {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"}
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class StreamRejected(Exception):
    """A Media Stream `start` that does not belong to a live call of ours."""


class Draining(Exception):
    """The process is shutting down and takes no new calls."""


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

    def on_failed(self, reason: str, *, opened: bool) -> None:
        if is_out_of_credit(reason):
            # Not a fault: both parties hear that the service is unavailable, and why the call
            # ended is on the record.
            self._call.log.warning("%s translation ended: %s", self._direction, reason)
            self._control.end(
                self._call,
                "engine_out_of_credit",
                notice="interpreter_unavailable",
                notify_agent=True,
                detail=reason,
            )
            return
        self._call.log.error("%s translation failed: %s", self._direction, reason)
        self._control.end(
            self._call,
            "engine_failed" if opened else "engine_unavailable",
            notice="interpreter_unavailable",
            detail=reason,
        )


def notice_at_s(max_call_s: float) -> float:
    """Seconds into a call at which its time-limit notice goes out (then the call ends)."""
    return max_call_s - min(TIME_LIMIT_NOTICE_S, max_call_s * TIME_LIMIT_NOTICE_SHARE)


class CallControl:
    def __init__(
        self,
        settings: Settings,
        rest: TwilioRest,
        engine: Engine,
        metrics: Metrics,
        hub: EventHub | None = None,
    ) -> None:
        self.hub = hub if hub is not None else EventHub()
        self._settings = settings
        self._rest = rest
        self._engine = engine
        self._metrics = metrics
        # Validated by Settings already; cached, so this is the very book it checked.
        self._prompts = load_prompts(settings.prompts_file, settings.languages_file)
        self._lock = threading.Lock()
        self._by_sid: dict[str, Call] = {}
        self._teardowns: list[threading.Thread] = []
        self._draining = threading.Event()
        self._watchdog: threading.Thread | None = None
        # Shutdown: claimed once without blocking (a second SIGTERM may interrupt the first
        # one's handler in the same thread, where a held lock would deadlock), then waited on
        # through ``_drained``, never by joining a thread that may not have started yet.
        self._shutdown_claim = threading.Lock()
        self._drained = threading.Event()

    # -- lookups ----------------------------------------------------------------------------

    def find(self, call_sid: str) -> Call | None:
        with self._lock:
            return self._by_sid.get(call_sid)

    def active_calls(self) -> list[Call]:
        with self._lock:
            return list({id(c): c for c in self._by_sid.values()}.values())

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    @property
    def prompts(self) -> PromptBook:
        return self._prompts

    # -- the voice webhook ------------------------------------------------------------------

    def screen(self, caller_sid: str, caller_number: str) -> str | None:
        """Admission before the language menu: the decline TwiML, or None to go on.

        Checks what :meth:`answer` checks (draining, ALLOWED_CALLERS, MAX_CONCURRENT_CALLS)
        without taking a slot: a caller still choosing holds nothing, so one who hangs up in
        the menu leaves nothing behind. :meth:`answer` checks again once they have chosen.
        """
        if self._draining.is_set():
            raise Draining
        reason = self._refusal(caller_sid, caller_number)
        return None if reason is None else self._decline(caller_sid, reason, self._lead)

    def answer(
        self,
        caller_sid: str,
        caller_number: str,
        dialled_number: str,
        caller_language: str | None = None,
    ) -> str:
        """Admit the call (or decline it politely) and return the caller's TwiML.

        ``caller_language`` is what the caller chose in the menu (default: the first of
        CALLER_LANGUAGES); it drives the agent→caller session and the caller's prompts.
        Raises :class:`Draining` while the process shuts down, so Twilio's fallback URL (or
        another instance) takes the call.
        """
        s = self._settings
        language = caller_language or self._lead
        if self._draining.is_set():
            raise Draining
        if self._refusal(caller_sid, caller_number) == "not_allowed":
            return self._decline(caller_sid, "not_allowed", language)
        agent_language = s.agent_language_for(s.agent_number)
        with self._lock:
            call = self._by_sid.get(caller_sid)
            is_new = call is None
            if call is None:
                active = len({id(c) for c in self._by_sid.values()})
                if active >= s.max_concurrent_calls:
                    call = None
                else:
                    call = self._new_call(
                        caller_sid, caller_number, dialled_number, language, agent_language
                    )
                    self._by_sid[caller_sid] = call
        if call is None:
            return self._decline(caller_sid, "all_busy", language)
        if is_new and self._admitted(call):
            # Twilio may retry a slow webhook; a retry gets the same TwiML and no second dial.
            self._metrics.calls_started.inc()
            self._metrics.active_calls.inc()
            self._ensure_watchdog()
            self.hub.publish(
                CallStarted(
                    call_sid=caller_sid,
                    caller_number=caller_number,
                    dialled_number=dialled_number,
                    caller_language=call.caller_language,
                    agent_language=call.agent_language,
                    engine=self._engine.name,
                    at=_utcnow(),
                )
            )
            call.log.info(
                "answered; dialling the agent (languages %s/%s, engine %s)",
                call.caller_language,
                call.agent_language,
                self._engine.name,
            )
            threading.Thread(
                target=self._setup, args=(call,), name=f"call-setup:{caller_sid[-6:]}", daemon=True
            ).start()
        greeting = self._prompts.prompt("connecting", call.caller_language)
        return connect_stream(s.stream_url(MEDIA_PATH), caller_sid, "caller", greeting)

    def _new_call(
        self,
        caller_sid: str,
        caller_number: str,
        dialled_number: str,
        caller_language: str,
        agent_language: str,
    ) -> Call:
        return Call(
            caller_sid=caller_sid,
            caller_number=caller_number,
            dialled_number=dialled_number,
            caller_language=caller_language,
            agent_language=agent_language,
            metrics=self._metrics,
            leg_config=LegConfig.from_settings(self._settings),
            publish=self.hub.publish,
        )

    def _admitted(self, call: Call) -> bool:
        """A new call was admitted here; False if it must not be set up (several instances:
        another instance admitted it already)."""
        return True

    @property
    def _lead(self) -> str:
        return self._settings.lead_language

    def _refusal(self, caller_sid: str, caller_number: str) -> PromptName | None:
        s = self._settings
        if s.allowed_callers and caller_number not in s.allowed_callers:
            return "not_allowed"
        with self._lock:
            if caller_sid in self._by_sid:
                return None  # already admitted (a retried webhook)
            active = len({id(c) for c in self._by_sid.values()})
        return "all_busy" if active >= s.max_concurrent_calls else None

    def _decline(self, caller_sid: str, reason: PromptName, language: str) -> str:
        if reason == "not_allowed":
            log.info("call=%s declined: caller not on ALLOWED_CALLERS", caller_sid)
        else:
            log.warning("call=%s declined: MAX_CONCURRENT_CALLS reached", caller_sid)
        self._metrics.calls_refused.labels(reason).inc()
        return say_and_hang_up(self._prompts.prompt(reason, language))

    def _setup(self, call: Call) -> None:
        s = self._settings
        try:
            self._open_sessions(call)
            agent_twiml = connect_stream(
                s.stream_url(MEDIA_PATH), call.sid, "agent", self._whisper(call)
            )
            # A Twilio Client identity is an app, never a voicemail box: no detection there.
            detect = s.agent_machine_detection and not s.agent_number.startswith("client:")
            agent_sid = self._rest.dial(
                DialRequest(
                    to=s.agent_number,
                    from_=s.agent_caller_id or call.dialled_number,
                    twiml=agent_twiml,
                    status_callback=s.public_url(STATUS_PATH),
                    timeout_s=s.agent_dial_timeout_s,
                    amd_callback=s.public_url(AMD_PATH) if detect else None,
                )
            )
        except TwilioRestError as exc:
            call.log.error("could not dial the agent: %s", exc)
            self.end(call, "dial_failed", notice="agent_unavailable", detail=str(exc))
            return
        except Exception as exc:  # thread boundary: end this call, keep serving
            call.log.exception("call set-up failed")
            self.end(call, "dial_failed", notice="agent_unavailable", detail=repr(exc))
            return
        with self._lock:
            # Under the registry lock, so a teardown running now either sees this SID (and
            # removes it) or ran before, in which case the call is not re-registered.
            live = call.set_agent_sid(agent_sid)
            if live:
                self._by_sid[agent_sid] = call
        if not live:
            # The caller left while we were dialling: cancel the agent's ringing phone.
            self._quietly(call, "cancel the agent", lambda: self._rest.hang_up(agent_sid, False))
            return
        call.log.info("agent leg %s dialled", agent_sid)
        self._agent_dialled(call, agent_sid)
        self.hub.publish(AgentDialled(call.sid, agent_sid, self._settings.agent_number, _utcnow()))

    def _open_sessions(self, call: Call) -> None:
        # Sessions open now, while the caller hears the greeting and the agent's phone
        # rings, so nobody's first words are lost to connection set-up.
        directions: tuple[tuple[Direction, str], ...] = (
            ("caller_to_agent", call.agent_language),
            ("agent_to_caller", call.caller_language),
        )
        for direction, language in directions:
            self._open_session(call, direction, language)

    def _open_session(self, call: Call, direction: Direction, language: str) -> None:
        # The speaker's language is the other direction's output (engines that take a source
        # language, e.g. Bland and the prompted realtime model, need it).
        speaker = call.caller_language if direction == "caller_to_agent" else call.agent_language
        spec = SessionSpec(call.sid, direction, language, speaker)
        session = self._engine.session(spec, _DirectionSink(self, call, direction))
        call.sessions[direction] = session
        session.start()

    def _agent_dialled(self, call: Call, agent_sid: str) -> None:
        """The agent's CallSid is known (several instances share it)."""

    def _whisper(self, call: Call) -> Prompt:
        """What the agent hears first: an interpreted call, and the caller's language."""
        table = self._prompts.languages
        caller_language = table[call.agent_language].name_of(call.caller_language)
        return self._prompts.prompt(
            "agent_whisper", call.agent_language, caller_language=caller_language
        )

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
                answered_now = status == "in-progress" and not call.agent_answered
                if answered_now:
                    call.agent_answered = True
                if status in FINAL_STATUSES:
                    call.agent_live = False
            if answered_now:
                self.hub.publish(AgentAnswered(call.sid, _utcnow()))
            if status in _AGENT_FAILURE:
                self.end(call, _AGENT_FAILURE[status], notice="agent_unavailable")
            elif status == "completed":
                self.end(call, "agent_hung_up")
        elif role == "caller" and status in FINAL_STATUSES:
            with call.lock:
                call.caller_live = False
            self.end(call, "caller_hung_up")
        return True

    def on_answered_by(self, call_sid: str, answered_by: str) -> bool:
        """Twilio's answering machine detection result for the agent leg; False when the call
        is not (or no longer) ours. A machine ends the call like an unanswered phone."""
        call = self.find(call_sid)
        if call is None or call.role_of(call_sid) != "agent":
            return False
        call.log.info("agent leg answered by %s", answered_by)
        if answered_by in MACHINE_ANSWERS:
            detail = f"AnsweredBy={answered_by}"
            self.end(call, "agent_machine", notice="agent_unavailable", detail=detail)
        return True

    # -- Media Streams ----------------------------------------------------------------------

    def bind_stream(self, start: Start) -> tuple[Call, Role]:
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
        if role == "caller":
            call.caller_stream_seen.set()
        if call.ended.is_set() and not (role == "caller" and call.caller_notice_pending):
            raise StreamRejected("the call has ended")
        # (A caller still owed a notice keeps the stream: closing it would hang up the call
        # before the notice's redirect; the redirect ends the stream instead.)
        return call, role

    def on_stream_ended(self, call: Call, role: Role) -> None:
        """A leg's stream stopped or its socket closed: that party is gone."""
        with call.lock:
            if role == "caller":
                call.caller_live = False
            else:
                call.agent_live = False
        self.end(call, "caller_hung_up" if role == "caller" else "agent_hung_up")

    # -- limits -----------------------------------------------------------------------------

    def _ensure_watchdog(self) -> None:
        with self._lock:
            if self._watchdog is not None:
                return
            self._watchdog = threading.Thread(target=self._watch, name="watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        limit = notice_at_s(self._settings.max_call_s)
        while not self._draining.wait(WATCHDOG_PERIOD_S):
            now = time.monotonic()
            for call in self.active_calls():
                call.tick()  # close transcript segments after a pause
                if now - call.started_at >= limit and not call.ended.is_set():
                    self.end(call, "time_limit", notice="time_limit", notify_agent=True)

    # -- teardown ---------------------------------------------------------------------------

    def end(
        self,
        call: Call,
        reason: EndReason,
        notice: PromptName | None = None,
        *,
        notify_agent: bool = False,
        detail: str = "",
    ) -> None:
        """End the whole call once, whoever asks first; returns at once.

        ``notice`` is said to the caller (and to the agent with ``notify_agent``), each in
        their own language, before their leg hangs up.
        """
        if not call.mark_ended(reason, detail):
            return
        call.caller_notice_pending = notice is not None
        call.log.info("ending: %s%s", reason, f" ({detail})" if detail else "")
        thread = threading.Thread(
            target=self._teardown,
            args=(call, notice, notify_agent),
            name=f"call-teardown:{call.sid[-6:]}",
            daemon=True,
        )
        self._start_teardown(thread)

    def _start_teardown(self, thread: threading.Thread) -> None:
        """Started under the lock: the drain joins only started threads, and pruning the
        finished ones (``is_alive`` is False before start too) never drops one not yet begun."""
        with self._lock:
            self._teardowns = [t for t in self._teardowns if t.is_alive()]
            thread.start()
            self._teardowns.append(thread)

    def _teardown(self, call: Call, notice: PromptName | None, notify_agent: bool) -> None:
        try:
            self._end_everything(call, notice, notify_agent)
        except Exception:  # thread boundary: never leave the registry holding a dead call
            call.log.exception("teardown failed")
        finally:
            with self._lock:
                for sid in (call.sid, call.agent_sid):
                    if sid is not None and self._by_sid.get(sid) is call:
                        del self._by_sid[sid]
            # Last words first, then the end: the record is closed even when stopping.
            call.flush_transcript()
            self.hub.publish(
                CallEnded(call.sid, _utcnow(), call.end_reason or "unknown", call.end_detail)
            )
            self._metrics.active_calls.dec()
            self._metrics.calls_ended.labels(call.end_reason or "unknown").inc()
            call.log.info(
                "ended (%s) after %.1f s", call.end_reason, time.monotonic() - call.started_at
            )

    def _end_everything(self, call: Call, notice: PromptName | None, notify_agent: bool) -> None:
        for session in list(call.sessions.values()):
            session.close()
        with call.lock:
            caller_live, agent_sid = call.caller_live, call.agent_sid
            agent_live, agent_answered = call.agent_live, call.agent_answered
        if caller_live:
            if notice is not None and not call.caller_stream_seen.is_set():
                # Ended while Twilio is still fetching or saying the greeting: a redirect now
                # could race our own TwiML. Once the caller's stream starts, it has run.
                call.caller_stream_seen.wait(CALLER_TWIML_WAIT_S)
            self._end_leg(call, call.sid, call.caller_language, notice, answered=True)
            call.caller_notice_pending = False
        if agent_sid is not None and agent_live:
            agent_notice = notice if notify_agent and agent_answered else None
            self._end_leg(call, agent_sid, call.agent_language, agent_notice, agent_answered)
        for leg in call.legs.values():
            leg.close()
        deadline = time.monotonic() + SESSION_JOIN_S
        for session in list(call.sessions.values()):
            join = getattr(session, "join", None)
            if join is not None:
                join(max(0.0, deadline - time.monotonic()))

    def _end_leg(
        self,
        call: Call,
        sid: str,
        language: str,
        notice: PromptName | None,
        answered: bool,
    ) -> None:
        """Say ``notice`` and hang up (one redirect), or just hang up."""
        if notice is not None:
            twiml = say_and_hang_up(self._prompts.prompt(notice, language))
            if self._quietly(call, f"tell {sid}", lambda: self._rest.redirect(sid, twiml)):
                return
        self._quietly(call, f"hang up {sid}", lambda: self._rest.hang_up(sid, answered))

    @staticmethod
    def _quietly(call: Call, what: str, action: Callable[[], object]) -> bool:
        try:
            action()
        except TwilioRestError as exc:
            call.log.warning("could not %s: %s", what, exc)
            return False
        return True

    # -- shutdown ---------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Stop admitting calls; after the grace period end the rest with a notice.
        Idempotent, and safe to re-enter from a signal handler: only the first call acts."""
        if not self._shutdown_claim.acquire(blocking=False):
            return  # never released: a control drains once
        self._draining.set()
        log.info(
            "shutting down: no new calls; %d active get %d s to finish",
            len(self.active_calls()),
            self._settings.shutdown_grace_s,
        )
        threading.Thread(target=self._drain, name="drainer", daemon=True).start()

    def _drain(self) -> None:
        try:
            deadline = time.monotonic() + self._settings.shutdown_grace_s
            while any(not c.ended.is_set() for c in self.active_calls()) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.2)
            for call in self.active_calls():
                self.end(call, "shutdown", notice="shutdown", notify_agent=True)
            self.wait_for_teardowns(SESSION_JOIN_S + 10.0)
        except Exception:  # thread boundary: whoever waits for the drain must still be freed
            log.exception("drain failed")
        finally:
            self._drained.set()

    def wait_for_teardowns(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            pending = list(self._teardowns)
        for thread in pending:
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def drain_timeout(self) -> float:
        """How long a drain can take: the grace period, then the notices and teardown."""
        return self._settings.shutdown_grace_s + SESSION_JOIN_S + 12.0

    def finish_shutdown(self, timeout: float) -> None:
        """Block until the drain is over (gunicorn's worker_exit), at most ``timeout``.
        Idempotent; any thread, while another is still beginning the drain."""
        self.begin_shutdown()
        self._drained.wait(timeout)
