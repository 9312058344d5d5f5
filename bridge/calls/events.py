"""What happens on calls, as events, for whoever listens: the store, the live console.

Publishing never blocks the audio path: each subscriber has its own bounded queue, and a
subscriber that falls behind loses its oldest events (counted on the subscription) instead of
slowing the call down.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from bridge.engines.contract import Direction, TextKind


@dataclass(frozen=True, slots=True)
class CallStarted:
    call_sid: str
    caller_number: str
    dialled_number: str
    caller_language: str
    agent_language: str
    engine: str
    at: datetime


@dataclass(frozen=True, slots=True)
class AgentDialled:
    call_sid: str
    agent_sid: str
    agent_number: str
    at: datetime


@dataclass(frozen=True, slots=True)
class AgentAnswered:
    call_sid: str
    at: datetime


@dataclass(frozen=True, slots=True)
class TextFragment:
    """A transcript delta as it arrives: the speaker's words or their translation."""

    call_sid: str
    direction: Direction
    kind: TextKind
    text: str
    offset_ms: int  # from the call's start


@dataclass(frozen=True, slots=True)
class SegmentClosed:
    """One utterance of one direction: what was said, what it became, and how late it was heard."""

    call_sid: str
    direction: Direction
    seq: int
    source_text: str
    translated_text: str
    start_ms: int
    end_ms: int
    delay_ms: int | None  # speech onset → first translated audio the listener heard


@dataclass(frozen=True, slots=True)
class DelayMeasured:
    call_sid: str
    direction: Direction
    delay_ms: int
    offset_ms: int


@dataclass(frozen=True, slots=True)
class CallEnded:
    call_sid: str
    at: datetime
    reason: str
    detail: str
    # Several instances (bridge/cluster/book.py): another instance ended the call and records its
    # end; this one only lets go of its parts. Its live view learns the call is over; its
    # store writer writes nothing (the claimer's record holds the end and its detail).
    elsewhere: bool = False


CallEvent = (
    CallStarted
    | AgentDialled
    | AgentAnswered
    | TextFragment
    | SegmentClosed
    | DelayMeasured
    | CallEnded
)


T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """A bounded queue whose ``offer`` never blocks: when full, the oldest item goes (counted).

    Used wherever a consumer may fall behind a producer on the audio path.
    """

    def __init__(self, maxsize: int) -> None:
        self.dropped = 0
        self._queue: queue.Queue[T] = queue.Queue(maxsize=maxsize)

    def offer(self, item: T) -> None:
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def get(self, timeout: float | None = None) -> T | None:
        """The next item, or None after ``timeout`` seconds without one."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None


class Subscription:
    """A subscriber's bounded queue; ``call_sid`` narrows it to one call."""

    def __init__(self, hub: EventHub, maxsize: int, call_sid: str | None) -> None:
        self._hub = hub
        self.call_sid = call_sid
        self._queue: DropOldestQueue[CallEvent] = DropOldestQueue(maxsize)

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    def offer(self, event: CallEvent) -> None:
        if self.call_sid is None or event.call_sid == self.call_sid:
            self._queue.offer(event)

    def get(self, timeout: float | None = None) -> CallEvent | None:
        """The next event, or None after ``timeout`` seconds without one."""
        return self._queue.get(timeout)

    def close(self) -> None:
        self._hub.unsubscribe(self)


class EventHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscription] = []

    def subscribe(self, maxsize: int = 10_000, call_sid: str | None = None) -> Subscription:
        sub = Subscription(self, maxsize, call_sid)
        with self._lock:
            self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    def publish(self, event: CallEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for sub in subscribers:
            sub.offer(event)
