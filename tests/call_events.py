"""Call events as the bridge publishes them, for the store, live view and API tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bridge.calls.events import (
    AgentAnswered,
    AgentDialled,
    CallEnded,
    CallEvent,
    CallStarted,
    DelayMeasured,
    SegmentClosed,
    TextFragment,
)

T0 = datetime(2026, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
CALLER = "+34911222333"
AGENT = "+15557654321"
DIALLED = "+15550002222"


def agent_sid_of(call_sid: str) -> str:
    return "CB" + call_sid[2:]


def call_events(
    sid: str,
    *,
    at: datetime = T0,
    caller: str = CALLER,
    agent: str = AGENT,
    reason: str | None = "caller_hung_up",
    detail: str = "",
) -> list[CallEvent]:
    """A whole call: start, dial, answer, two segments each way with fragments, delays, end
    (no end when ``reason`` is None)."""
    events: list[CallEvent] = [
        CallStarted(sid, caller, DIALLED, "es", "en", "openai", at),
        AgentDialled(sid, agent_sid_of(sid), agent, at + timedelta(seconds=1)),
        AgentAnswered(sid, at + timedelta(seconds=4)),
        TextFragment(sid, "caller_to_agent", "source", "Hola, ", 5000),
        TextFragment(sid, "caller_to_agent", "translation", "Hello, ", 5600),
        DelayMeasured(sid, "caller_to_agent", 840, 5840),
        SegmentClosed(
            sid, "caller_to_agent", 1, "Hola, buenos días.", "Hello, good morning.", 5000, 7200, 840
        ),
        SegmentClosed(
            sid, "agent_to_caller", 1, "How can I help?", "¿En qué puedo ayudarle?", 8000, 9500, 910
        ),
        DelayMeasured(sid, "agent_to_caller", 910, 8910),
        SegmentClosed(
            sid,
            "caller_to_agent",
            2,
            "Mi factura <no> llega",
            "My bill --> is late",
            61_000,
            63_500,
            None,
        ),
    ]
    if reason is not None:
        events.append(CallEnded(sid, at + timedelta(seconds=70), reason, detail))
    return events


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
