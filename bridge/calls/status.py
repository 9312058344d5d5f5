"""Twilio's call-progress and answering-machine callbacks, applied to the call they name."""

from __future__ import annotations

from datetime import UTC, datetime

from bridge.calls.book import CallBook
from bridge.calls.call import EndReason
from bridge.calls.events import AgentAnswered, EventHub
from bridge.calls.sessions import Ender
from bridge.telephony.rest import FINAL_STATUSES

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


class StatusCallbacks:
    """Applies callbacks wherever they land (several instances: from the shared book)."""

    def __init__(self, book: CallBook, hub: EventHub, ender: Ender) -> None:
        self._book = book
        self._hub = hub
        self._ender = ender

    def on_status(self, call_sid: str, status: str) -> bool:
        """A call-progress callback; False when the call is not one of ours (a no-op)."""
        found = self._book.locate(call_sid)
        if found is None:
            return False
        call, role = found
        call.log.info("%s leg status %s", role, status)
        final = status in FINAL_STATUSES
        if role == "agent":
            answered_now = status == "in-progress" and self._book.first_answer(call)
            self._book.leg_status(call, role, status, final)
            with call.lock:
                call.agent_status = status
                call.agent_answered = call.agent_answered or answered_now
                call.agent_live = call.agent_live and not final
            if answered_now:
                self._hub.publish(AgentAnswered(call.sid, _utcnow()))
            if status in _AGENT_FAILURE:
                self._ender.end(call, _AGENT_FAILURE[status], notice="agent_unavailable")
            elif status == "completed":
                self._book.leg_gone(call, "agent", "agent_hung_up")
        elif final:
            self._book.leg_status(call, role, status, final)
            with call.lock:
                call.caller_live = False
            self._book.leg_gone(call, "caller", "caller_hung_up")
        return True

    def on_answered_by(self, call_sid: str, answered_by: str) -> bool:
        """Twilio's answering machine detection result for the agent leg; False when the call
        is not (or no longer) ours. A machine ends the call like an unanswered phone."""
        found = self._book.locate(call_sid)
        if found is None or found[1] != "agent":
            return False
        call = found[0]
        call.log.info("agent leg answered by %s", answered_by)
        if answered_by in MACHINE_ANSWERS:
            detail = f"AnsweredBy={answered_by}"
            self._ender.end(call, "agent_machine", notice="agent_unavailable", detail=detail)
        return True


def _utcnow() -> datetime:
    return datetime.now(UTC)
