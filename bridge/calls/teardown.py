"""Ending calls: once, whoever asks first, totally, each in a short-lived thread of its own.

A teardown closes both translation sessions, says a notice to each party that is owed one and
hangs up both legs through Twilio's REST API (one redirect each), closes both legs' sockets and
joins every thread of the call. With several instances exactly one instance claims the end
(the call's :class:`~bridge.calls.book.CallBook` decides); the others let go of their parts
once it has said its notices. A fault in a teardown is caught at its thread's boundary: the call
still leaves the book, and its end is still published.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from bridge.calls.book import CallBook
from bridge.calls.call import Call, EndReason
from bridge.calls.events import CallEnded, EventHub
from bridge.ops.metrics import Metrics
from bridge.settings.prompts import PromptBook, PromptName
from bridge.telephony.rest import TwilioRest, TwilioRestError
from bridge.telephony.twiml import say_and_hang_up

SESSION_JOIN_S = 8.0
# How long a teardown owing the caller a notice waits for the greeting TwiML to have run.
CALLER_TWIML_WAIT_S = 10.0
# How long an instance that is not ending a call waits for the claimer's "ended" before it
# closes its parts anyway (the claimer may have died mid-teardown).
RELEASE_WAIT_S = 15.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


def quietly(call: Call, what: str, action: Callable[[], object]) -> bool:
    """Run a REST ``action`` for ``call``; a refusal is logged, not raised (the call is ending
    or being set up, and the other steps must still run). Whether it succeeded."""
    try:
        action()
    except TwilioRestError as exc:
        call.log.warning("could not %s: %s", what, exc)
        return False
    return True


class Teardowns:
    """The teardowns (and releases) of one process's calls."""

    def __init__(
        self, rest: TwilioRest, metrics: Metrics, hub: EventHub, book: CallBook, prompts: PromptBook
    ) -> None:
        self._rest = rest
        self._metrics = metrics
        self._hub = hub
        self._book = book
        self._prompts = prompts
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

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
        their own language, before their leg hangs up. With several instances the one that
        claims the end runs the teardown; any other lets go of its own parts of the call.
        """
        if not call.mark_ended(reason, detail):
            return
        if not self._book.claim_end(call, reason):
            if self._book.holds(call):  # (a call only looked up for a callback holds nothing)
                self._spawn(lambda: self._release(call), f"call-release:{call.sid[-6:]}")
            return
        call.caller_notice_pending = notice is not None
        call.log.info("ending: %s%s", reason, f" ({detail})" if detail else "")
        self._spawn(
            lambda: self._teardown(call, notice, notify_agent), f"call-teardown:{call.sid[-6:]}"
        )

    def lost(self, call: Call, detail: str) -> None:
        """A peer instance holding part of ``call`` is gone: end it with a notice."""
        self.end(call, "instance_lost", notice="instance_lost", notify_agent=True, detail=detail)

    def let_go(self, call: Call) -> None:
        """Another instance ends ``call``: close this instance's parts once it has spoken."""
        # The claimer's record says why it ended; this replica's reason is never published.
        if call.mark_ended("caller_hung_up"):
            self._spawn(lambda: self._release(call), f"call-release:{call.sid[-6:]}")

    def _teardown(self, call: Call, notice: PromptName | None, notify_agent: bool) -> None:
        try:
            self._end_everything(call, notice, notify_agent)
        except Exception:  # thread boundary: never leave the registry holding a dead call
            call.log.exception("teardown failed")
        finally:
            self._forget(call, publish_end=True)

    def _end_everything(self, call: Call, notice: PromptName | None, notify_agent: bool) -> None:
        for session in list(call.sessions.values()):
            session.close()
        others = self._book.gather(call)
        self._book.tell(others, "ending", call)
        with call.lock:
            caller_live, agent_sid = call.caller_live, call.agent_sid
            agent_live, agent_answered = call.agent_live, call.agent_answered
        if caller_live:
            if notice is not None and not call.caller_stream_seen.is_set():
                # Ended while Twilio is still fetching or saying the greeting: a redirect now
                # could race our own TwiML. Once the caller's stream starts, it has run.
                self._book.wait_caller_stream(call, CALLER_TWIML_WAIT_S)
            self._end_leg(call, call.sid, call.caller_language, notice, answered=True)
            call.caller_notice_pending = False
        if agent_sid is not None and agent_live:
            agent_notice = notice if notify_agent and agent_answered else None
            self._end_leg(call, agent_sid, call.agent_language, agent_notice, agent_answered)
        self._book.tell(others, "ended", call)
        self._close_parts(call)

    def _release(self, call: Call) -> None:
        """Another instance ends this call: close our parts once it has said its notices."""
        try:
            for session in list(call.sessions.values()):
                session.close()
            self._book.wait_ended_elsewhere(call.sid, RELEASE_WAIT_S)
            self._close_parts(call)
        except Exception:  # thread boundary
            call.log.exception("release failed")
        finally:
            self._forget(call, publish_end=False)

    def _close_parts(self, call: Call) -> None:
        for leg in call.legs.values():
            leg.close()
        deadline = time.monotonic() + SESSION_JOIN_S
        for session in list(call.sessions.values()):
            join = getattr(session, "join", None)
            if join is not None:
                join(max(0.0, deadline - time.monotonic()))

    def _forget(self, call: Call, *, publish_end: bool) -> None:
        held = self._book.forget(call)
        # Last words first, then the end: the record is closed even when stopping.
        call.flush_transcript()
        if held:
            self._metrics.active_calls.dec()
        if not publish_end:
            # Ended by another instance, which records the end: this one's live view (the API,
            # the console) must still learn the call is over, with the claimer's reason.
            reason = self._book.end_reason(call.sid) or call.end_reason or "unknown"
            self._hub.publish(CallEnded(call.sid, _utcnow(), reason, "", elsewhere=True))
        else:
            self._hub.publish(
                CallEnded(call.sid, _utcnow(), call.end_reason or "unknown", call.end_detail)
            )
            self._metrics.calls_ended.labels(call.end_reason or "unknown").inc()
            call.log.info(
                "ended (%s) after %.1f s", call.end_reason, time.monotonic() - call.started_at
            )

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        # Started under the lock: a drain joins only started threads, and pruning the finished
        # ones (``is_alive`` is False before start too) never drops one not yet begun.
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            thread.start()
            self._threads.append(thread)

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
            if quietly(call, f"tell {sid}", lambda: self._rest.redirect(sid, twiml)):
                return
        quietly(call, f"hang up {sid}", lambda: self._rest.hang_up(sid, answered))

    def wait(self, timeout: float) -> None:
        """Join the teardowns under way, at most ``timeout`` in all."""
        deadline = time.monotonic() + timeout
        with self._lock:
            pending = list(self._threads)
        for thread in pending:
            thread.join(max(0.0, deadline - time.monotonic()))
