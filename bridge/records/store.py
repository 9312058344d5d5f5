"""The call store: every call's record and transcript, in SQLite or PostgreSQL.

``DATABASE_URL`` picks the database; the same SQLAlchemy Core code serves both. The bridge
creates and upgrades the schema itself (Alembic, migrations in bridge/records/migrations). Writes
come only from the hub's call events, in one writer thread (bridge/records/writer.py), so the
audio path never waits for the database; reads (the API) run on request threads, each on its
own pooled connection (SQLite in WAL mode, so they do not wait for the writer either).

Concurrency: ``start``/``close`` from the app factory and shutdown; queries from any thread.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, and_, create_engine, event, or_, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from bridge.calls.events import EventHub
from bridge.records.erasure import Eraser, RetentionJob, erase_call, utcnow
from bridge.records.tables import calls, delays_of, segment_of, segments, summary_of
from bridge.records.views import CallDetail, CallSummary
from bridge.records.writer import StoreWriter

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The writer's queue: ~100 000 events is minutes of every call's fragments at full load, and
# a few tens of MB at worst; past it the oldest events are dropped (and counted), not waited on.
WRITER_QUEUE_EVENTS = 100_000
MAX_PAGE = 200
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_stores: weakref.WeakSet[CallStore] = weakref.WeakSet()
T = TypeVar("T")


class StoreUnavailable(Exception):
    """The database cannot be read right now (unreachable, or not migrated yet)."""


class BadCursor(ValueError):
    """A ``before`` cursor that this store did not hand out."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the last call's start and row id (ties broken by id)."""

    started_at: datetime
    call_id: int

    def encode(self) -> str:
        # Integer microseconds (what both databases keep), so the boundary row compares equal.
        micros = (self.started_at - _EPOCH) // timedelta(microseconds=1)
        return f"{micros}-{self.call_id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        micros, sep, call_id = text.partition("-")
        if not sep or not micros.isdigit() or not call_id.isdigit() or len(micros) > 18:
            raise BadCursor(f"not a cursor: {text[:40]!r}")
        return cls(_EPOCH + timedelta(microseconds=int(micros)), int(call_id))


class CallStore:
    """Call records in the database at ``url`` (an SQLAlchemy URL, password never logged)."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.url_for_logs = parsed.render_as_string(hide_password=True)
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database:
                # Created on first start: the embedded default needs nothing installed.
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            # sqlite3's own busy wait: a reader that meets a checkpoint waits, not fails.
            kwargs["connect_args"] = {"timeout": 5.0}
        else:
            # A dead database host must not hang start-up or a request for minutes; a pooled
            # connection the server dropped (a restart) is replaced before use, not failed on.
            kwargs["connect_args"] = {"connect_timeout": 5}
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(parsed, **kwargs)
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._lock = threading.Lock()
        self._migrate_lock = threading.Lock()  # the writer and a request may both try
        self._schema_ready = threading.Event()
        self._writer: StoreWriter | None = None
        self._retention: RetentionJob | None = None
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest revision. Raises on database errors."""
        # Imported here: importing Alembic announces each of its plugins at INFO; silence that
        # first (its "Running upgrade" lines stay).
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        self._schema_ready.set()

    def try_migrate(self) -> bool:
        """``migrate``, logging a database error instead of raising it: False then."""
        with self._migrate_lock:
            if self._schema_ready.is_set():
                return True
            try:
                self.migrate()
            except SQLAlchemyError as exc:
                log.error("call store %s: cannot migrate yet: %s", self.url_for_logs, exc)
                return False
        log.info("call store %s: schema ready", self.url_for_logs)
        return True

    def start(self, hub: EventHub, orphan_after_s: float | None = None) -> None:
        """Subscribe to ``hub`` and start the writer thread. If the schema is not there yet
        (``migrate`` failed: database down) the writer retries before writing anything.
        ``orphan_after_s``: close open calls older than this, left by a process that died."""
        with self._lock:
            if self._writer is not None or self._closed:
                return
            subscription = hub.subscribe(maxsize=WRITER_QUEUE_EVENTS)
            self._writer = StoreWriter(self.engine, subscription, self.try_migrate, orphan_after_s)
        self._writer.start()
        _stores.add(self)

    def start_retention(
        self,
        days: int,
        *,
        clock: Callable[[], datetime] = utcnow,
        interval_s: float | None = None,
    ) -> RetentionJob | None:
        """Delete calls older than ``days`` on a periodic thread (bridge/records/erasure.py).
        Once per store; None when already started or closed."""
        with self._lock:
            if self._retention is not None or self._closed:
                return None
            extra = {} if interval_s is None else {"interval_s": interval_s}
            job = RetentionJob(self.engine, days, self.try_migrate, clock=clock, **extra)
            self._retention = job
        job.start()
        return job

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, close calls still open as ``shutdown``, stop. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            writer = self._writer
            retention = self._retention
        _stores.discard(self)
        if retention is not None and not retention.stop(timeout):
            log.warning("call store: retention pass still running after %.1f s", timeout)
            if writer is not None:
                writer.stop(timeout)
            return  # it still uses the engine: do not pull the pool from under it
        if writer is not None and not writer.stop(timeout):
            log.warning("call store: writer still busy after %.1f s; left running", timeout)
            return  # it still uses the engine: do not pull the pool from under it
        self.engine.dispose()
        if writer is not None:
            log.info(
                "call store closed: %d events written, %d dropped", writer.written, writer.dropped
            )

    @property
    def writer(self) -> StoreWriter | None:
        return self._writer

    # -- reading ----------------------------------------------------------------------------

    def list_calls(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        number: str | None = None,
        outcome: str | None = None,
        limit: int = 50,
        before: str | None = None,
        exclude: Collection[str] = (),
    ) -> tuple[list[CallSummary], str | None]:
        """Calls newest first: started in [since, until), with ``number`` as the caller's or
        the agent's, ended for ``outcome`` (an end reason). ``before`` is the cursor the
        previous page returned; the second value is the next page's, or None at the end.
        ``exclude``: CallSids to leave out (the API lists calls in progress separately)."""
        limit = max(1, min(limit, MAX_PAGE))
        query = select(calls).order_by(calls.c.started_at.desc(), calls.c.id.desc())
        if since is not None:
            query = query.where(calls.c.started_at >= since)
        if until is not None:
            query = query.where(calls.c.started_at < until)
        if number:
            query = query.where(
                or_(calls.c.caller_number == number, calls.c.agent_number == number)
            )
        if outcome:
            query = query.where(calls.c.end_reason == outcome)
        if exclude:
            query = query.where(calls.c.call_sid.not_in(sorted(exclude)))
        if before:
            cursor = Cursor.decode(before)
            query = query.where(
                or_(
                    calls.c.started_at < cursor.started_at,
                    and_(calls.c.started_at == cursor.started_at, calls.c.id < cursor.call_id),
                )
            )
        rows = self._read(lambda conn: conn.execute(query.limit(limit + 1)).all())
        page = rows[:limit]
        next_cursor = None
        if len(rows) > limit:
            last = page[-1]._mapping
            next_cursor = Cursor(last["started_at"], last["id"]).encode()
        return [summary_of(r) for r in page], next_cursor

    def open_calls(self, started_after: datetime, limit: int = MAX_PAGE) -> list[CallSummary]:
        """Calls with no end recorded that started after ``started_after``, newest first:
        those that may still be in progress (on any instance sharing this database)."""
        query = (
            select(calls)
            .where(calls.c.ended_at.is_(None), calls.c.started_at > started_after)
            .order_by(calls.c.started_at.desc(), calls.c.id.desc())
            .limit(max(1, min(limit, MAX_PAGE)))
        )
        return [summary_of(r) for r in self._read(lambda conn: conn.execute(query).all())]

    def get_call(self, sid: str) -> CallDetail | None:
        """The call whose caller's or agent leg's CallSid is ``sid``, with its transcript."""

        def read(conn: Connection) -> CallDetail | None:
            row = conn.execute(
                select(calls)
                .where(or_(calls.c.call_sid == sid, calls.c.agent_sid == sid))
                .order_by((calls.c.call_sid == sid).desc())
                .limit(1)
            ).first()
            if row is None:
                return None
            segs = conn.execute(
                select(segments)
                .where(segments.c.call_id == row._mapping["id"])
                .order_by(segments.c.start_ms, segments.c.id)
            ).all()
            return CallDetail(summary_of(row), tuple(segment_of(s) for s in segs), delays_of(row))

        return self._read(read)

    # -- erasing ----------------------------------------------------------------------------

    def erase(self, sid: str, who: Eraser, at: datetime | None = None) -> str | None:
        """Erase the call of ``sid`` (caller's or agent's CallSid) and its transcript, and
        record who did it. The caller's CallSid erased, or None when none is stored."""
        if not self._schema_ready.is_set() and not self.try_migrate():
            raise StoreUnavailable("the call store is not reachable yet")
        try:
            return erase_call(self.engine, sid, who, at or utcnow())
        except SQLAlchemyError as exc:
            log.warning("call store: erasure failed: %s", exc)
            raise StoreUnavailable("the call store could not be written") from exc

    def _read(self, query: Callable[[Connection], T]) -> T:
        if not self._schema_ready.is_set() and not self.try_migrate():
            raise StoreUnavailable("the call store is not reachable yet")
        try:
            with self.engine.connect() as conn:
                return query(conn)
        except SQLAlchemyError as exc:
            log.warning("call store: read failed: %s", exc)
            raise StoreUnavailable("the call store could not be read") from exc


def close_all(timeout: float) -> None:
    """Close every started store of this process (shutdown, after the calls ended)."""
    for store in list(_stores):
        store.close(timeout)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 module's own transaction handling commits before DDL and begins lazily;
    # take it over (SQLAlchemy's documented recipe, with _sqlite_begin) so a migration or a
    # batch is one real transaction.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL: readers (the API) never wait for the writer, nor it for them. NORMAL sync is safe
    # against a process crash (the WAL survives); only a power cut may lose the last commits.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")
