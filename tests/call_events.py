"""Call events as the bridge publishes them, for the store, live view and API tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

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


def follow(
    url: str,
    headers: dict[str, str],
    into: list[tuple[str, Any]],
    opened: threading.Event,
    timeout: float = 60.0,
) -> None:
    """Read a call's server-sent event stream (what the console shows) into ``into`` as
    (event, data) pairs until the stream ends; ``opened`` is set once it answered 200."""
    with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
        assert response.status_code == 200
        opened.set()
        name = ""
        for raw in response.iter_lines(decode_unicode=True):
            line = raw if isinstance(raw, str) else raw.decode()
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                into.append((name, json.loads(line.removeprefix("data: "))))


def segments_from_both(events: list[tuple[str, Any]]) -> bool:
    """Both parties have spoken and a pause closed an utterance of each: a segment each way."""
    spoke = {data.get("direction") for name, data in list(events) if name == "segment"}
    return spoke >= {"caller_to_agent", "agent_to_caller"}
