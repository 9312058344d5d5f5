"""What the admin API answers when several instances share calls (``REDIS_URL``).

Each instance's live view (bridge/web/live.py) follows only the events of its own parts of a
call: the home instance sees the call start, but not the transcript spoken on the instances
holding the legs, and an instance holding a leg never saw the start. Whichever instance a
request reaches, the API answers the same: whether a call is in progress comes from the
shared call state in Redis (a call is live while some instance holds it and nobody has
claimed its end), the call itself from the shared store, where every instance writes what it
saw (the start, each direction's transcript, the end). The local live view is used where it
is fresher: the summary of a call in progress that this instance follows from its start, with
the segments recorded by the others added to its own.

When Redis cannot be asked, the answer is what this instance sees, as in one process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol, runtime_checkable

from bridge.records.store import CallStore, StoreUnavailable
from bridge.records.views import DIRECTIONS, CallDetail, CallSummary
from bridge.web.events_stream import Follow, sse

# A call followed through the store and Redis: how often they are read (each read is one
# query and one Redis round trip per open stream), and how long an ended call's stream waits
# for the claimer to record the end (it does once its notices are said and both legs hung up).
POLL_S = 1.0
END_RECORD_WAIT_S = 30.0


class SharedCalls(Protocol):
    """The cluster's shared call state (bridge/cluster/book.py)."""

    def live_calls(self, sids: Sequence[str]) -> set[str] | None:
        """Which of these calls (callers' CallSids) are in progress on any instance; None
        when that cannot be known right now."""


@runtime_checkable
class ErasesSharedCalls(Protocol):
    """Shared call state that can drop an erased call's keys (bridge/cluster/book.py)."""

    def erase_shared(self, sid: str, agent_sid: str | None) -> bool:
        """Remove the call's shared state; False when that failed (it expires anyway)."""


def _marked(detail: CallDetail, active: bool) -> CallDetail:
    if detail.summary.active == active:
        return detail
    return replace(detail, summary=replace(detail.summary, active=active))


def _first(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)


def _merged(local: CallDetail, stored: CallDetail) -> CallDetail:
    """A live call this instance follows: its summary and delays as seen here (fresher), its
    transcript with the segments other instances recorded (spoken on their legs)."""
    segments = {(s.direction, s.seq): s for s in stored.segments}
    segments.update({(s.direction, s.seq): s for s in local.segments})
    delays = {d: _first(local.delays.get(d), stored.delays.get(d)) for d in DIRECTIONS}
    ordered = sorted(segments.values(), key=lambda s: (s.start_ms, s.direction, s.seq))
    return replace(local, segments=tuple(ordered), delays=delays)


def find_shared(
    sid: str, local: CallDetail | None, store: CallStore, shared: SharedCalls
) -> CallDetail | None:
    """One call (by either leg's CallSid) as the whole cluster knows it; None if unknown.
    ``local`` is this instance's live view of it."""
    try:
        stored = store.get_call(sid)
    except StoreUnavailable:
        if local is None:
            raise
        stored = None  # the local view is all that can be said right now
    known = local or stored
    if known is None:
        return None
    live = shared.live_calls([known.summary.call_sid])
    local_live = local is not None and local.summary.ended_at is None
    if live is None:  # Redis cannot say: as in one process, the local view first
        return local if local_live else stored or local
    if known.summary.call_sid in live:
        if local is not None and local_live:
            return local if stored is None else _merged(local, stored)
        return _marked(known if stored is None else stored, active=True)
    # Over (or gone with every instance that held it): the record, which has the end and the
    # transcript from every instance once the claimer's writer has written them.
    return _marked(known if stored is None else stored, active=False)


def in_progress_shared(
    local: list[CallSummary], store: CallStore, shared: SharedCalls, started_after: datetime
) -> list[CallSummary]:
    """Calls in progress on any instance, newest first: those this instance follows (the local
    view's summaries, fresher) and those only recorded (open records younger than the longest
    possible call), each kept only if the shared state says it is live."""
    try:
        recorded = store.open_calls(started_after)
    except StoreUnavailable:
        recorded = []
    following = {s.call_sid for s in local}
    candidates = local + [replace(s, active=True) for s in recorded if s.call_sid not in following]
    if not candidates:
        return []
    live = shared.live_calls([s.call_sid for s in candidates])
    if live is None:
        return local
    return sorted(
        (s for s in candidates if s.call_sid in live), key=lambda s: s.started_at, reverse=True
    )


def follow_shared(first: CallDetail, store: CallStore, shared: SharedCalls) -> Follow:
    """The event stream of a call this instance's live view does not follow (its parts are on
    other instances): ``snapshot``, then each ``segment`` as it is recorded, then ``ended``
    once the shared state says it is over and its end is recorded. No fragments: those stay
    on the instance where they were spoken."""
    sid = first.summary.call_sid

    def events(stopped: Callable[[], bool], heartbeat_s: float) -> Iterator[str]:
        yield sse("snapshot", first.to_json())
        seen = {(s.direction, s.seq) for s in first.segments}
        quiet_since = time.monotonic()
        over_since: float | None = None
        while not stopped():
            time.sleep(POLL_S)
            live = shared.live_calls([sid])
            try:
                detail = store.get_call(sid)
            except StoreUnavailable:
                detail = None
            for segment in () if detail is None else detail.segments:
                if (segment.direction, segment.seq) not in seen:
                    seen.add((segment.direction, segment.seq))
                    yield sse("segment", segment.to_json())
                    quiet_since = time.monotonic()
            if live is not None and sid not in live:
                over_since = over_since or time.monotonic()
                recorded = detail is not None and detail.summary.ended_at is not None
                if recorded or time.monotonic() - over_since >= END_RECORD_WAIT_S:
                    reason = detail.summary.end_reason if detail is not None else None
                    yield sse("ended", {"reason": reason or "unknown"})
                    return
            if time.monotonic() - quiet_since >= heartbeat_s:
                yield ": heartbeat\n\n"
                quiet_since = time.monotonic()

    return events
