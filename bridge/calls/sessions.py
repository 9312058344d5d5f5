"""A call's translation sessions: opened per direction, their output delivered to the
listening leg and the transcript, their failure ending the call with a notice."""

from __future__ import annotations

from typing import Protocol

from bridge.audio.pcm import Pcm16
from bridge.calls.call import LISTENER_OF, Call, EndReason
from bridge.engines.contract import Direction, Engine, SessionSpec, TextKind, is_out_of_credit
from bridge.settings.prompts import PromptName


class Ender(Protocol):
    """Whoever ends calls (:class:`bridge.calls.teardown.Teardowns`)."""

    def end(
        self,
        call: Call,
        reason: EndReason,
        notice: PromptName | None = None,
        *,
        notify_agent: bool = False,
        detail: str = "",
    ) -> None: ...


class DirectionSink:
    """Delivers one session's output to the listening leg and the call's transcript."""

    def __init__(self, ender: Ender, call: Call, direction: Direction) -> None:
        self._ender = ender
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
            self._ender.end(
                self._call,
                "engine_out_of_credit",
                notice="interpreter_unavailable",
                notify_agent=True,
                detail=reason,
            )
            return
        self._call.log.error("%s translation failed: %s", self._direction, reason)
        self._ender.end(
            self._call,
            "engine_failed" if opened else "engine_unavailable",
            notice="interpreter_unavailable",
            detail=reason,
        )


def open_sessions(engine: Engine, ender: Ender, call: Call) -> None:
    """Both directions' sessions, opened when the call is admitted: while the caller hears the
    greeting and the agent's phone rings, so nobody's first words are lost to connection
    set-up. (Several instances open each where its speaker's stream lands instead.)"""
    directions: tuple[tuple[Direction, str], ...] = (
        ("caller_to_agent", call.agent_language),
        ("agent_to_caller", call.caller_language),
    )
    for direction, language in directions:
        open_session(engine, ender, call, direction, language)


def open_session(
    engine: Engine, ender: Ender, call: Call, direction: Direction, language: str
) -> None:
    """Open and start the session translating ``direction`` into ``language``."""
    # The speaker's language is the other direction's output (engines that take a source
    # language, e.g. Bland and the prompted realtime model, need it).
    speaker = call.caller_language if direction == "caller_to_agent" else call.agent_language
    spec = SessionSpec(call.sid, direction, language, speaker)
    session = engine.session(spec, DirectionSink(ender, call, direction))
    call.sessions[direction] = session
    session.start()
