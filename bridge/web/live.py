"""The live view: calls in progress as the hub reports them, for the API and the console.

One thread (``live-calls``) applies the hub's events to an in-memory map of calls. A call
stays for ``linger_s`` (5 min) after it ends, so a console watching it sees the end; one that
never reports an end is dropped after ``stale_after_s``; at most ``max_calls`` are kept.

Watchers (the API's event streams) are fed by the same thread right after it applies an
event, under the same lock that a watcher's snapshot is taken under: a stream gets every
event after its snapshot exactly once, none lost between the two, none twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace

from bridge.calls.events import (
    AgentAnswered,
    AgentDialled,
    CallEnded,
    CallEvent,
    CallStarted,
    DelayMeasured,
    DropOldestQueue,
    EventHub,
    SegmentClosed,
    Subscription,
)
from bridge.engines.contract import Direction
from bridge.records.views import DIRECTIONS, CallDetail, CallSummary, Segment

log = logging.getLogger(__name__)
LINGER_S = 300.0
MAX_CALLS = 10_000
# Segments kept per call: hours of conversation; the store has them all.
MAX_SEGMENTS = 5_000
HUB_QUEUE_EVENTS = 100_000  # as the store's writer: the view is a few µs per event behind
WATCH_QUEUE_EVENTS = 1_000  # a watcher this far behind loses its oldest events
POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class WatchItem:
    """An event of the watched call and the call's summary once it was applied."""

    event: CallEvent
    summary: CallSummary


class Watch:
    """One watcher of one call: ``snapshot`` then, from ``get``, everything after it."""

    def __init__(self, live: LiveCalls, snapshot: CallDetail) -> None:
        self._live = live
        self.snapshot = snapshot
        self.call_sid = snapshot.summary.call_sid
        self._queue: DropOldestQueue[WatchItem] = DropOldestQueue(WATCH_QUEUE_EVENTS)

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    def offer(self, item: WatchItem) -> None:
        self._queue.offer(item)

    def get(self, timeout: float) -> WatchItem | None:
        return self._queue.get(timeout)

    def close(self) -> None:
        self._live.unwatch(self)


@dataclass(slots=True)
class _Call:
    summary: CallSummary
    segments: deque[Segment] = field(default_factory=lambda: deque(maxlen=MAX_SEGMENTS))
    delays: dict[Direction, int | None] = field(
        default_factory=lambda: dict.fromkeys(DIRECTIONS, None)
    )
    touched: float = field(default_factory=time.monotonic)
    ended: float | None = None  # monotonic time of CallEnded

    def detail(self) -> CallDetail:
        return CallDetail(self.summary, tuple(self.segments), dict(self.delays))


class LiveCalls:
    """Calls in progress (and recently ended), by the caller's CallSid."""

    def __init__(
        self,
        hub: EventHub,
        *,
        linger_s: float = LINGER_S,
        stale_after_s: float | None = None,
        max_calls: int = MAX_CALLS,
    ) -> None:
        self._hub = hub
        self._linger_s = linger_s
        self._stale_after_s = stale_after_s
        self._max_calls = max_calls
        self._lock = threading.Lock()
        self._calls: dict[str, _Call] = {}
        self._agent_legs: dict[str, str] = {}  # agent CallSid → caller CallSid
        self._watches: dict[str, list[Watch]] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe now (so no event published after this returns is missed), then follow
        the hub from the ``live-calls`` thread."""
        with self._lock:
            if self._thread is not None or self._stopping.is_set():
                return
            sub = self._hub.subscribe(maxsize=HUB_QUEUE_EVENTS)
            self._thread = threading.Thread(
                target=self._run, args=(sub,), name="live-calls", daemon=True
            )
        self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Stop following the hub; watchers see ``closed`` and end. Idempotent."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._stopping.is_set()

    def _run(self, sub: Subscription) -> None:
        try:
            while not self._stopping.is_set():
                event = sub.get(timeout=POLL_S)
                if event is not None:
                    self.apply(event)
                self._prune(time.monotonic())
        except Exception:  # thread boundary: the console going blind must not touch a call
            log.exception("live view failed; active calls are no longer shown")
        finally:
            sub.close()

    # -- reading ----------------------------------------------------------------------------

    def caller_sid(self, sid: str) -> str | None:
        """The caller's CallSid of the call ``sid`` (caller's or agent's) names, if known."""
        with self._lock:
            if sid in self._calls:
                return sid
            return self._agent_legs.get(sid)

    def active(self) -> list[CallSummary]:
        """Calls not yet ended, newest first."""
        with self._lock:
            live = [c.summary for c in self._calls.values() if c.ended is None]
        return sorted(live, key=lambda s: s.started_at, reverse=True)

    def detail(self, sid: str) -> CallDetail | None:
        """The call (by caller's or agent's CallSid) as seen so far, ended or not."""
        with self._lock:
            call = self._calls.get(self._agent_legs.get(sid, sid))
            return None if call is None else call.detail()

    def erase(self, sid: str) -> bool:
        """Forget a call (by either leg's CallSid) at once, as its erasure asks; True if it
        was here. Its watchers keep only what they were sent already."""
        with self._lock:
            caller_sid = self._agent_legs.get(sid, sid)
            found = caller_sid in self._calls
            self._forget(caller_sid)
            return found

    def watch(self, sid: str) -> Watch | None:
        """Follow a call from now on: a snapshot and every later event. None if unknown."""
        with self._lock:
            call = self._calls.get(self._agent_legs.get(sid, sid))
            if call is None:
                return None
            watch = Watch(self, call.detail())
            self._watches.setdefault(watch.call_sid, []).append(watch)
            return watch

    def unwatch(self, watch: Watch) -> None:
        with self._lock:
            watches = self._watches.get(watch.call_sid, [])
            if watch in watches:
                watches.remove(watch)
            if not watches:
                self._watches.pop(watch.call_sid, None)

    # -- applying events --------------------------------------------------------------------

    def apply(self, event: CallEvent) -> None:
        """Fold one hub event into the view (the thread does this; tests may call it)."""
        with self._lock:
            call = self._calls.get(event.call_sid)
            if isinstance(event, CallStarted):
                call = self._started(event)
            elif call is None:
                return  # started before we listened, or already forgotten
            else:
                self._update(call, event)
            call.touched = time.monotonic()
            item = WatchItem(event, call.summary)
            for watch in self._watches.get(event.call_sid, ()):
                watch.offer(item)

    def _started(self, e: CallStarted) -> _Call:
        call = _Call(
            CallSummary(
                call_sid=e.call_sid,
                agent_sid=None,
                caller_number=e.caller_number,
                agent_number=None,
                dialled_number=e.dialled_number,
                caller_language=e.caller_language,
                agent_language=e.agent_language,
                engine=e.engine,
                started_at=e.at,
                answered_at=None,
                ended_at=None,
                end_reason=None,
                end_detail="",
                active=True,
            )
        )
        self._calls[e.call_sid] = call
        if len(self._calls) > self._max_calls:
            self._evict_oldest()
        return call

    def _update(self, call: _Call, event: CallEvent) -> None:
        s = call.summary
        if isinstance(event, AgentDialled):
            call.summary = replace(s, agent_sid=event.agent_sid, agent_number=event.agent_number)
            self._agent_legs[event.agent_sid] = event.call_sid
        elif isinstance(event, AgentAnswered):
            call.summary = replace(s, answered_at=event.at)
        elif isinstance(event, SegmentClosed):
            call.segments.append(
                Segment(
                    direction=event.direction,
                    seq=event.seq,
                    source_text=event.source_text,
                    translated_text=event.translated_text,
                    start_ms=event.start_ms,
                    end_ms=event.end_ms,
                    delay_ms=event.delay_ms,
                )
            )
        elif isinstance(event, DelayMeasured):
            call.delays[event.direction] = event.delay_ms
        elif isinstance(event, CallEnded):
            call.summary = replace(
                s, ended_at=event.at, end_reason=event.reason, end_detail=event.detail, active=False
            )
            call.ended = time.monotonic()

    # -- bounds -----------------------------------------------------------------------------

    def _prune(self, now: float) -> None:
        with self._lock:
            gone = [
                sid
                for sid, c in self._calls.items()
                if (c.ended is not None and now - c.ended >= self._linger_s)
                or (self._stale_after_s is not None and now - c.touched >= self._stale_after_s)
            ]
            for sid in gone:
                self._forget(sid)

    def _evict_oldest(self) -> None:
        """Over ``max_calls``: forget the longest-ended call, else the least recently heard."""
        ended = [(c.ended, sid) for sid, c in self._calls.items() if c.ended is not None]
        if ended:
            self._forget(min(ended)[1])
            return
        self._forget(min((c.touched, sid) for sid, c in self._calls.items())[1])

    def _forget(self, sid: str) -> None:
        call = self._calls.pop(sid, None)
        if call is not None and call.summary.agent_sid is not None:
            self._agent_legs.pop(call.summary.agent_sid, None)
