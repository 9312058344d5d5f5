"""Call control: admitting, dialling the agent, status callbacks, stream binding, limits, teardown.

One class serves one process and several instances alike: where calls are kept, and how the
parts of a call held by other instances are reached, is its :class:`~bridge.calls.book.CallBook`
(in memory, or shared through Redis: bridge/cluster/book.py).

Every call's teardown runs once, in its own short-lived thread (it makes REST requests), and
is total: both sessions closed, both legs' sockets closed, the other party's call ended
through the REST API, every thread of the call joined. With several instances exactly one
claims the end; the others let go of their parts once it has said its notices. A fault in one
call's thread is caught at that thread's boundary and ends that call only. One watchdog thread
per process enforces ``MAX_CALL_SECONDS``; shutdown drains calls for ``SHUTDOWN_GRACE_SECONDS``,
then ends the rest with a notice.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from bridge.calls.book import CallBook, MemoryCallBook, StreamRejected
from bridge.calls.call import DIRECTION_OF_SPEAKER, LISTENER_OF, Call, EndReason
from bridge.calls.events import AgentDialled, CallStarted, EventHub
from bridge.calls.leg import LegConfig, Role
from bridge.calls.lifetime import Lifetime
from bridge.calls.redact import Redactor
from bridge.calls.sessions import open_session, open_sessions
from bridge.calls.status import StatusCallbacks
from bridge.calls.teardown import Teardowns, quietly
from bridge.engines.contract import Engine
from bridge.ops.metrics import Metrics
from bridge.settings.env import Settings
from bridge.settings.prompts import Prompt, PromptBook, PromptName, load_prompts
from bridge.telephony.media_wire import Start
from bridge.telephony.rest import DialRequest, TwilioRest, TwilioRestError
from bridge.telephony.routes import AMD_PATH, MEDIA_PATH, STATUS_PATH
from bridge.telephony.stream_token import StreamTokenError, StreamTokens
from bridge.telephony.twiml import (
    PARAM_CALL,
    PARAM_LEG,
    PARAM_TOKEN,
    connect_stream,
    say_and_hang_up,
)

log = logging.getLogger(__name__)
# How long a leg's stream token admits its `start`. The caller's stream starts as soon as
# Twilio has said the greeting; the agent's only after dialling, ringing (at most
# AGENT_DIAL_TIMEOUT) and the whisper. The margin also covers clocks of instances that differ.
STREAM_TOKEN_MARGIN_S = 120.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Draining(Exception):
    """The process is shutting down and takes no new calls."""


class CallControl:
    def __init__(
        self,
        settings: Settings,
        rest: TwilioRest,
        engine: Engine,
        metrics: Metrics,
        hub: EventHub | None = None,
        *,
        book: CallBook | None = None,
    ) -> None:
        self.hub = hub if hub is not None else EventHub()
        self.book: CallBook = book if book is not None else MemoryCallBook()
        self.book.serve(self)
        self._settings = settings
        self._rest = rest
        self._engine = engine
        self._metrics = metrics
        # Validated by Settings already; cached, so this is the very book it checked.
        self._prompts = load_prompts(settings.prompts_file, settings.languages_file)
        self._tokens = StreamTokens(settings.twilio_auth_token)
        self._lock = threading.Lock()
        self._teardowns = Teardowns(rest, metrics, self.hub, self.book, self._prompts)
        self._status = StatusCallbacks(self.book, self.hub, self._teardowns)
        self._lifetime = Lifetime(settings, self.book, self._teardowns)

    def start(self) -> None:
        """Start serving (several instances: join the cluster; raises if Redis is
        unreachable: an instance that cannot share state must not take calls)."""
        self.book.join()

    # -- lookups ----------------------------------------------------------------------------

    def find(self, call_sid: str) -> Call | None:
        return self.book.find(call_sid)

    def active_calls(self) -> list[Call]:
        return self.book.calls()

    @property
    def draining(self) -> bool:
        return self._lifetime.draining

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
        if self._lifetime.draining:
            raise Draining
        if self._ended(caller_sid):
            return self._replayed(caller_sid, self._lead)
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
        if self._lifetime.draining:
            raise Draining
        if self._refusal(caller_sid, caller_number) == "not_allowed":
            return self._decline(caller_sid, "not_allowed", language)
        if self._ended(caller_sid):
            return self._replayed(caller_sid, language)
        agent_language = s.agent_language_for(s.agent_number)
        call, is_new = self.book.register(
            caller_sid,
            lambda: self.new_call(
                caller_sid, caller_number, dialled_number, language, agent_language
            ),
            s.max_concurrent_calls,
        )
        if call is None:
            return self._decline(caller_sid, "all_busy", language)
        if call.ended.is_set():  # replayed while its teardown runs
            return self._replayed(caller_sid, language)
        if is_new and self._admitted(call):
            # Twilio may retry a slow webhook; a retry gets the same TwiML and no second dial.
            self._metrics.calls_started.inc()
            self._metrics.active_calls.inc()
            self._lifetime.watch_limits()
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
        intro = [greeting, *self._consent_notice(call.caller_language)]
        # (A retried webhook gets a fresh token: the same call and leg, a later expiry.)
        token = self._tokens.issue(caller_sid, "caller", time.time(), STREAM_TOKEN_MARGIN_S)
        return connect_stream(s.stream_url(MEDIA_PATH), caller_sid, "caller", token, intro)

    def new_call(
        self,
        caller_sid: str,
        caller_number: str,
        dialled_number: str,
        caller_language: str,
        agent_language: str,
    ) -> Call:
        config = LegConfig.from_settings(self._settings)
        return Call(
            caller_sid=caller_sid,
            caller_number=caller_number,
            dialled_number=dialled_number,
            caller_language=caller_language,
            agent_language=agent_language,
            metrics=self._metrics,
            leg_config=config,
            publish=self.hub.publish,
            leg_factory=self.book.leg_factory(caller_sid, config, self._metrics),
            redactor=Redactor(self._settings.redact),
        )

    def _admitted(self, call: Call) -> bool:
        """A new call was admitted here; False if it must not be set up (several instances:
        another instance admitted it already, and a retried webhook landed here)."""
        try:
            admitted = self.book.admit(call)
        except Exception:
            self.book.unregister(call)
            raise  # the webhook's error handler tells the caller the service is unavailable
        if not admitted:
            call.log.info("already admitted by another instance")
            self.book.unregister(call)
        return admitted

    @property
    def _lead(self) -> str:
        return self._settings.lead_language

    def _refusal(self, caller_sid: str, caller_number: str) -> PromptName | None:
        s = self._settings
        if s.allowed_callers and caller_number not in s.allowed_callers:
            return "not_allowed"
        if self.book.find(caller_sid) is not None:
            return None  # already admitted (a retried webhook)
        return "all_busy" if len(self.book.calls()) >= s.max_concurrent_calls else None

    def _ended(self, caller_sid: str) -> bool:
        """Whether the call of ``caller_sid`` has ended here or (several instances) anywhere."""
        call = self.book.find(caller_sid)
        return (call is not None and call.ended.is_set()) or self.book.ended_recently(caller_sid)

    def _replayed(self, caller_sid: str, language: str) -> str:
        """A voice webhook for a call that is over: Twilio sends none, so it is a replay (its
        signature has no timestamp). Never admitted again, never dialled: a goodbye."""
        log.warning("call=%s voice webhook for a call that has ended: not admitted", caller_sid)
        self._metrics.calls_refused.labels("replayed").inc()
        return say_and_hang_up(self._prompts.prompt("interpreter_unavailable", language))

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
            if not self.book.sessions_follow_streams:
                open_sessions(self._engine, self._teardowns, call)
            ttl_s = s.agent_dial_timeout_s + STREAM_TOKEN_MARGIN_S
            token = self._tokens.issue(call.sid, "agent", time.time(), ttl_s)
            intro = [self._whisper(call), *self._consent_notice(call.agent_language)]
            agent_twiml = connect_stream(s.stream_url(MEDIA_PATH), call.sid, "agent", token, intro)
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
        if not self.book.add_agent(call, agent_sid):
            # The caller left while we were dialling: cancel the agent's ringing phone.
            quietly(call, "cancel the agent", lambda: self._rest.hang_up(agent_sid, False))
            return
        call.log.info("agent leg %s dialled", agent_sid)
        if not self.book.agent_dialled(call, agent_sid) and not call.ended.is_set():
            # Ended elsewhere while we dialled (its teardown could not know this SID yet).
            quietly(call, "cancel the agent", lambda: self._rest.hang_up(agent_sid, False))
        self.hub.publish(AgentDialled(call.sid, agent_sid, self._settings.agent_number, _utcnow()))

    def _whisper(self, call: Call) -> Prompt:
        """What the agent hears first: an interpreted call, and the caller's language."""
        table = self._prompts.languages
        caller_language = table[call.agent_language].name_of(call.caller_language)
        return self._prompts.prompt(
            "agent_whisper", call.agent_language, caller_language=caller_language
        )

    def _consent_notice(self, language: str) -> list[Prompt]:
        """CONSENT_NOTICE=on: the notice in ``language`` (start-up checked each language has it)."""
        if not self._settings.consent_notice:
            return []
        return [self._prompts.prompt("consent_notice", language)]

    # -- status callbacks (bridge/calls/status.py) -----------------------------------------

    def on_status(self, call_sid: str, status: str) -> bool:
        """A call-progress callback; False when the call is not one of ours (a no-op)."""
        return self._status.on_status(call_sid, status)

    def on_answered_by(self, call_sid: str, answered_by: str) -> bool:
        """Twilio's answering machine detection result for the agent leg."""
        return self._status.on_answered_by(call_sid, answered_by)

    # -- Media Streams ----------------------------------------------------------------------

    def bind_stream(self, start: Start) -> tuple[Call, Role]:
        """Match a stream's `start` to a live call; returns the call and the leg's role.

        Only a stream opened by our own TwiML carries a valid token for the call and leg it
        names: checked first, so a forged `start` touches nothing (no lookup, no wait, no
        shared state). A leg takes one stream in its life (the book refuses a second).
        """
        if start.account_sid != self._settings.twilio_account_sid:
            raise StreamRejected("start.accountSid is not this account")
        params = start.custom_parameters
        bridge_sid, leg = params.get(PARAM_CALL, ""), params.get(PARAM_LEG, "")
        try:
            self._tokens.check(bridge_sid, leg, params.get(PARAM_TOKEN, ""), time.time())
        except StreamTokenError as exc:
            raise StreamRejected(str(exc)) from None
        call, role, held_now = self.book.bind(start, bridge_sid)
        if held_now:  # several instances: a call admitted elsewhere, now partly held here
            self._metrics.active_calls.inc()
            self._lifetime.watch_limits()
        if role == "caller":
            call.caller_stream_seen.set()
        if call.ended.is_set() and not (role == "caller" and call.caller_notice_pending):
            raise StreamRejected("the call has ended")
        # (A caller still owed a notice keeps the stream: closing it would hang up the call
        # before the notice's redirect; the redirect ends the stream instead.)
        if self.book.sessions_follow_streams and not call.ended.is_set():
            direction = DIRECTION_OF_SPEAKER[role]
            if direction not in call.sessions:
                listener = LISTENER_OF[direction]
                language = call.agent_language if listener == "agent" else call.caller_language
                open_session(self._engine, self._teardowns, call, direction, language)
        return call, role

    def on_stream_ended(self, call: Call, role: Role) -> None:
        """A leg's stream stopped or its socket closed: that party is gone."""
        with call.lock:
            if role == "caller":
                call.caller_live = False
            else:
                call.agent_live = False
        if not call.ended.is_set():
            self.book.leg_left(call, role)
        self.end(call, "caller_hung_up" if role == "caller" else "agent_hung_up")

    # -- teardown (bridge/calls/teardown.py) -----------------------------------------------

    def end(
        self,
        call: Call,
        reason: EndReason,
        notice: PromptName | None = None,
        *,
        notify_agent: bool = False,
        detail: str = "",
    ) -> None:
        """End the whole call once, whoever asks first; returns at once (see
        :meth:`Teardowns.end`)."""
        self._teardowns.end(call, reason, notice, notify_agent=notify_agent, detail=detail)

    def lost(self, call: Call, detail: str) -> None:
        self._teardowns.lost(call, detail)

    def let_go(self, call: Call) -> None:
        self._teardowns.let_go(call)

    # -- shutdown (bridge/calls/lifetime.py) -----------------------------------------------

    def begin_shutdown(self) -> None:
        """Stop admitting calls; after the grace period end the rest with a notice."""
        self._lifetime.begin_shutdown()

    @property
    def drain_timeout(self) -> float:
        return self._lifetime.drain_timeout

    def wait_for_teardowns(self, timeout: float) -> None:
        self._teardowns.wait(timeout)

    def finish_shutdown(self, timeout: float) -> None:
        """Block until the drain is over (gunicorn's worker_exit), at most ``timeout``.
        Idempotent; any thread, while another is still beginning the drain."""
        self._lifetime.finish_shutdown(timeout)
        self.book.leave()
