"""Retention and erasure of call records: old calls removed on a schedule, one call on demand.

``RETENTION_DAYS`` (bridge/settings/env.py): a ``RetentionJob`` thread deletes every call that
started more than that many days ago, with its transcript, once an hour (and once at start).
Its clock is injected, so tests move time instead of waiting for it.

``erase_call`` removes one call (found by the caller's or the agent's CallSid) with its
transcript in one transaction and, in the same transaction, adds a row to ``erasures``: the
CallSid, when, and who asked (how they authenticated, from which address, which console
session), never anything the call held. The erasure records themselves are kept: they hold
no content, and they are the proof that a request to erase was carried out.

Concurrency: both run on their own connection from any thread (the API's request threads, the
retention thread); the store's writer never revisits an ended call, so neither races it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, insert, or_, select
from sqlalchemy.exc import SQLAlchemyError

from bridge.records.tables import calls, erasures, segments

log = logging.getLogger(__name__)
# Once an hour: a call is kept at most an hour past RETENTION_DAYS, and the query is cheap
# (the started_at index) when there is nothing to delete.
RETENTION_INTERVAL_S = 3600.0
# Deleted per transaction: a first run over years of calls never holds the SQLite write lock
# (and so the store's writer) for long.
RETENTION_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Eraser:
    """Who asked for an erasure. The admin token is shared, so it names no person: how they
    authenticated (``bearer`` or ``console``), their address, the console session's id."""

    auth_method: str
    client_address: str
    session_id: str | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


def erase_call(engine: Engine, sid: str, who: Eraser, at: datetime) -> str | None:
    """Delete the call whose caller's or agent's CallSid is ``sid`` and record who did it.
    Returns the caller's CallSid erased, or None when no such call is stored."""
    with engine.begin() as conn:
        row = conn.execute(
            select(calls.c.id, calls.c.call_sid)
            .where(or_(calls.c.call_sid == sid, calls.c.agent_sid == sid))
            .order_by((calls.c.call_sid == sid).desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        call_id, call_sid = int(row.id), str(row.call_sid)
        # Explicitly, not by the foreign key's cascade: SQLite only cascades with its
        # foreign_keys pragma on, and a connection made elsewhere may not have it.
        conn.execute(delete(segments).where(segments.c.call_id == call_id))
        conn.execute(delete(calls).where(calls.c.id == call_id))
        conn.execute(
            insert(erasures).values(
                call_sid=call_sid,
                erased_at=at,
                auth_method=who.auth_method,
                client_address=who.client_address[:64],
                session_id=who.session_id,
            )
        )
    return call_sid


def delete_older_than(engine: Engine, cutoff: datetime, batch: int = RETENTION_BATCH) -> int:
    """Delete every call that started before ``cutoff``, with its transcript, in batches of
    ``batch`` calls (one transaction each). Returns how many calls were deleted."""
    total = 0
    while True:
        with engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(calls.c.id).where(calls.c.started_at < cutoff).limit(batch)
                ).scalars()
            )
            if not ids:
                return total
            conn.execute(delete(segments).where(segments.c.call_id.in_(ids)))
            conn.execute(delete(calls).where(calls.c.id.in_(ids)))
        total += len(ids)


class RetentionJob:
    """Deletes calls older than ``days`` every ``interval_s`` on its own thread."""

    def __init__(
        self,
        engine: Engine,
        days: int,
        ensure_schema: Callable[[], bool],
        *,
        clock: Callable[[], datetime] = utcnow,
        interval_s: float = RETENTION_INTERVAL_S,
    ) -> None:
        self._engine = engine
        self.days = days
        self._ensure_schema = ensure_schema
        self._clock = clock
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-retention", daemon=True)
        self.runs = 0  # passes completed (tests wait on it)
        self.deleted = 0  # calls deleted since start

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """End the thread (idempotent). True when it ended within ``timeout``."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def run_once(self) -> int:
        """One pass: delete what is past retention now (by the injected clock)."""
        cutoff = self._clock() - timedelta(days=self.days)
        deleted = delete_older_than(self._engine, cutoff)
        self.deleted += deleted
        self.runs += 1
        if deleted:
            log.info("call store: deleted %d calls older than %d days", deleted, self.days)
        return deleted

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._ensure_schema():
                    self.run_once()
            except SQLAlchemyError as exc:
                # The database is away: the next pass deletes what this one could not.
                log.warning("call store: retention pass failed: %s", exc)
            except Exception:  # thread boundary: retention failing must never touch a call
                log.exception("call store: retention pass failed")
            self._stop.wait(self._interval_s)
