"""The call store's single writer: call events from the hub, written in batches, off the call.

One thread (``store-writer``) reads its own hub subscription and writes whatever has queued
up in one transaction, so a burst of events costs one commit. Publishing only appends to that
subscription's bounded queue, so however slow the database, a call never waits for it.

A failed batch is rolled back and retried with backoff; when the database stays away the
batch is written event by event and what still fails is dropped and logged, so one poisoned
event cannot stall every later call. Segments are written as they close, so a process that
dies mid-call loses at most the segment being spoken.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, CursorResult, Engine, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from bridge.calls.events import (
    AgentAnswered,
    AgentDialled,
    CallEnded,
    CallEvent,
    CallStarted,
    DelayMeasured,
    SegmentClosed,
    Subscription,
    TextFragment,
)
from bridge.records.tables import DELAY_COLUMN, calls, segments

log = logging.getLogger(__name__)
POLL_S = 0.2  # how soon the writer notices close() when nothing is queued
MAX_BATCH = 500
RETRY_DELAYS_S = (0.1, 0.3, 1.0, 3.0)  # then event by event
SCHEMA_RETRY_S = 5.0
MAX_CACHED_IDS = 10_000
SHUTDOWN_DETAIL = "the bridge stopped before the call ended"
ORPHAN_DETAIL = "found open at start-up: the process serving it stopped without closing it"

# Built once and executed with parameters: the columns set are the parameters' keys, and
# SQLAlchemy's compiled cache makes each shape cost a lookup (building statements per event
# cost more CPU than executing them).
_INSERT_CALL = insert(calls)
_UPDATE_CALL = update(calls).where(calls.c.id == bindparam("row_id"))
_SELECT_ID = select(calls.c.id).where(calls.c.call_sid == bindparam("sid"))
# A segment seen twice (a batch retried after its commit did go through) is stored once;
# both databases speak ON CONFLICT DO NOTHING.
_INSERT_SEGMENT = {
    "postgresql": pg_insert(segments).on_conflict_do_nothing(),
    "sqlite": sqlite_insert(segments).on_conflict_do_nothing(),
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class StoreWriter:
    """Owns the writer thread. ``ready`` says whether the schema exists (migrations ran)."""

    def __init__(
        self,
        engine: Engine,
        subscription: Subscription,
        ensure_schema: Callable[[], bool],
        orphan_after_s: float | None,
    ) -> None:
        self._engine = engine
        self._sub = subscription
        self._ensure_schema = ensure_schema
        self._orphan_after_s = orphan_after_s
        self._stopping = threading.Event()
        self._deadline = float("inf")
        self._ids: dict[str, int] = {}  # call_sid → calls.id, for rows we know exist
        self._open: set[str] = set()  # calls this process saw start and not end
        self.written = 0  # events committed (tests and logs)
        self.dropped = 0  # events given up on after retries
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Write what is queued (at most ``timeout`` s), close this process's open calls as
        ``shutdown``, end the thread. True when it finished in time."""
        self._deadline = time.monotonic() + timeout
        self._stopping.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if not self._wait_for_schema():
                return
            self._close_orphans()
            while True:
                first = self._sub.get(timeout=POLL_S)
                if first is None:
                    if self._stopping.is_set():
                        break
                    continue
                batch = [first]
                while len(batch) < MAX_BATCH and (more := self._sub.get(timeout=0)) is not None:
                    batch.append(more)
                self._write(batch)
                if self._past_deadline():
                    log.warning("call store: stopped before its queue was empty")
                    break
            self._close_open_calls()
        except Exception:  # thread boundary: the store failing must never touch a call
            log.exception("call store writer failed; call records are no longer written")
        finally:
            self._sub.close()
            if self._sub.dropped:
                log.warning("call store: %d events were dropped (queue full)", self._sub.dropped)

    def _past_deadline(self) -> bool:
        return self._stopping.is_set() and time.monotonic() >= self._deadline

    def _wait_for_schema(self) -> bool:
        """Migrations failed at start (database unreachable): retry until they run. Events
        meanwhile wait in the subscription (bounded; the oldest go first if it fills)."""
        while not self._ensure_schema():
            if self._stopping.wait(SCHEMA_RETRY_S) or self._past_deadline():
                return False
        return True

    def _write(self, batch: Sequence[CallEvent]) -> None:
        # Fragments are only for the live view (segments are what is stored), and so is an
        # end another instance records.
        events = [e for e in batch if not _live_view_only(e)]
        if events:
            self._write_events(events)
        # Another instance ended these and writes their end: not ours to close at shutdown.
        self._open -= {e.call_sid for e in batch if isinstance(e, CallEnded) and e.elsewhere}

    def _write_events(self, events: Sequence[CallEvent]) -> None:
        for delay in (*RETRY_DELAYS_S, None):
            try:
                self._commit(events)
                return
            except SQLAlchemyError as exc:
                self._ids.clear()  # the rolled-back transaction may have inserted some
                log.warning("call store: writing %d events failed: %s", len(events), exc)
                if delay is None or self._past_deadline():
                    break
                # Not Event.wait: once close() has begun that returns at once, and the retries
                # would hammer a database that is struggling already.
                time.sleep(min(delay, max(0.0, self._deadline - time.monotonic())))
        self._write_one_by_one(events)

    def _write_one_by_one(self, events: Sequence[CallEvent]) -> None:
        failed = 0
        last_error = ""
        for event in events:
            try:
                self._commit([event])
            except SQLAlchemyError as exc:
                self._ids.clear()
                failed += 1
                last_error = str(exc)
        if failed:
            self.dropped += failed
            log.error("call store: dropped %d call events: %s", failed, last_error)

    def _commit(self, events: Sequence[CallEvent]) -> None:
        opened: set[str] = set()
        closed: set[str] = set()
        with self._engine.begin() as conn:
            for event in events:
                self._apply(conn, event)
                if isinstance(event, CallEnded):
                    closed.add(event.call_sid)
                    opened.discard(event.call_sid)
                else:
                    opened.add(event.call_sid)
        self._open = (self._open | opened) - closed
        for sid in closed:
            self._ids.pop(sid, None)
        self.written += len(events)

    # -- one event --------------------------------------------------------------------------

    def _apply(self, conn: Connection, event: CallEvent) -> None:
        if isinstance(event, CallStarted):
            self._started(conn, event)
            return
        at = event.at if isinstance(event, AgentDialled | AgentAnswered | CallEnded) else None
        call_id = self._call_id(conn, event.call_sid, at)
        changes: dict[str, object] = {}
        if isinstance(event, AgentDialled):
            changes = {"agent_sid": event.agent_sid, "agent_number": event.agent_number}
        elif isinstance(event, AgentAnswered):
            changes = {"answered_at": event.at}
        elif isinstance(event, DelayMeasured):
            changes = {DELAY_COLUMN[event.direction]: event.delay_ms}
        elif isinstance(event, CallEnded):
            changes = {"ended_at": event.at, "end_reason": event.reason, "end_detail": event.detail}
        elif isinstance(event, SegmentClosed):
            self._segment(conn, call_id, event)
        if changes:
            conn.execute(_UPDATE_CALL, {"row_id": call_id, **changes})

    def _started(self, conn: Connection, e: CallStarted) -> None:
        values = {
            "caller_number": e.caller_number,
            "dialled_number": e.dialled_number,
            "caller_language": e.caller_language,
            "agent_language": e.agent_language,
            "engine": e.engine,
            "started_at": e.at,
        }
        call_id = self._existing_id(conn, e.call_sid)
        if call_id is None:
            result = conn.execute(_INSERT_CALL, {"call_sid": e.call_sid, **values})
            self._remember(e.call_sid, _inserted_id(result))
        else:  # a placeholder made for an event that overtook its start: fill it in
            conn.execute(_UPDATE_CALL, {"row_id": call_id, **values})

    def _segment(self, conn: Connection, call_id: int, e: SegmentClosed) -> None:
        conn.execute(
            _INSERT_SEGMENT[conn.dialect.name],
            {
                "call_id": call_id,
                "direction": e.direction,
                "seq": e.seq,
                "source_text": e.source_text,
                "translated_text": e.translated_text,
                "start_ms": e.start_ms,
                "end_ms": e.end_ms,
                "delay_ms": e.delay_ms,
            },
        )

    def _existing_id(self, conn: Connection, call_sid: str) -> int | None:
        if call_sid in self._ids:
            return self._ids[call_sid]
        found = conn.execute(_SELECT_ID, {"sid": call_sid}).scalar()
        if found is not None:
            self._remember(call_sid, int(found))
        return None if found is None else int(found)

    def _call_id(self, conn: Connection, call_sid: str, at: datetime | None) -> int:
        """The row of ``call_sid``; a placeholder when its CallStarted was never seen (it was
        dropped, or this store started mid-call) so later events are not lost."""
        found = self._existing_id(conn, call_sid)
        if found is not None:
            return found
        log.warning("call=%s call store: event before the call's start; placeholder", call_sid)
        placeholder = dict.fromkeys(
            ("caller_number", "dialled_number", "caller_language", "agent_language", "engine"), ""
        )
        result = conn.execute(
            _INSERT_CALL, {"call_sid": call_sid, "started_at": at or utcnow(), **placeholder}
        )
        call_id = _inserted_id(result)
        self._remember(call_sid, call_id)
        return call_id

    def _remember(self, call_sid: str, call_id: int) -> None:
        if len(self._ids) >= MAX_CACHED_IDS:
            self._ids.clear()  # a cache: rows are found again by their unique call_sid
        self._ids[call_sid] = call_id

    # -- ends nobody reported ---------------------------------------------------------------

    def _close_open_calls(self) -> None:
        """Stopping: every call this process started and did not see end is closed now."""
        if not self._open:
            return
        now = utcnow()
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    update(calls)
                    .where(calls.c.call_sid.in_(sorted(self._open)), calls.c.ended_at.is_(None))
                    .values(ended_at=now, end_reason="shutdown", end_detail=SHUTDOWN_DETAIL)
                )
        except SQLAlchemyError as exc:
            log.error("call store: could not close %d open calls: %s", len(self._open), exc)
            return
        log.info("call store: closed %d open calls as shutdown", len(self._open))
        self._open.clear()

    def _close_orphans(self) -> None:
        """Calls left open by a process that died (killed, power lost). Only those older than
        the longest possible call: a younger one may be live on another instance."""
        if self._orphan_after_s is None:
            return
        now = utcnow()
        cutoff = now - timedelta(seconds=self._orphan_after_s)
        try:
            with self._engine.begin() as conn:
                result = conn.execute(
                    update(calls)
                    .where(calls.c.ended_at.is_(None), calls.c.started_at < cutoff)
                    .values(ended_at=now, end_reason="shutdown", end_detail=ORPHAN_DETAIL)
                )
        except SQLAlchemyError as exc:
            log.warning("call store: could not close orphaned calls: %s", exc)
            return
        if result.rowcount:
            log.warning("call store: closed %d calls a dead process left open", result.rowcount)


def _live_view_only(event: CallEvent) -> bool:
    return isinstance(event, TextFragment) or (isinstance(event, CallEnded) and event.elsewhere)


def _inserted_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None, "an INSERT of one row has a primary key"
    return int(key[0])
