"""The call store's tables as SQLAlchemy Core sees them, and rows turned into records.

The migrations (bridge/records/migrations/versions) own the DDL; these definitions describe the same
tables for queries, and a test checks the two agree. Times are stored in UTC: PostgreSQL
keeps them as ``timestamptz``; SQLite has no time zones, so they are stored naive (UTC) and
made aware again on the way out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from bridge.engines.contract import Direction
from bridge.records.views import CallSummary, Segment


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime in, an aware UTC datetime out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        # SQLite stores datetimes as text compared as text: one offset-free format for all.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

calls = Table(
    "calls",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_sid", String(64), nullable=False, unique=True),
    Column("agent_sid", String(64), nullable=True, index=True),
    Column("caller_number", String(255), nullable=False),
    Column("agent_number", String(255), nullable=True),
    Column("dialled_number", String(255), nullable=False),
    Column("caller_language", String(16), nullable=False),
    Column("agent_language", String(16), nullable=False),
    Column("engine", String(32), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("answered_at", UtcDateTime, nullable=True),
    Column("ended_at", UtcDateTime, nullable=True),
    Column("end_reason", String(64), nullable=True, index=True),
    Column("end_detail", Text, nullable=False, server_default=""),
    Column("delay_caller_to_agent_ms", Integer, nullable=True),
    Column("delay_agent_to_caller_ms", Integer, nullable=True),
    Index("ix_calls_started_at_id", "started_at", "id"),
    Index("ix_calls_caller_number", "caller_number"),
    Index("ix_calls_agent_number", "agent_number"),
)

segments = Table(
    "segments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_id", Integer, ForeignKey("calls.id", ondelete="CASCADE"), nullable=False),
    Column("direction", String(32), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("source_text", Text, nullable=False),
    Column("translated_text", Text, nullable=False),
    Column("start_ms", Integer, nullable=False),
    Column("end_ms", Integer, nullable=False),
    Column("delay_ms", Integer, nullable=True),
    UniqueConstraint("call_id", "direction", "seq", name="uq_segments_call_direction_seq"),
)

# Who erased which call when (bridge/records/erasure.py); never the call's content.
erasures = Table(
    "erasures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_sid", String(64), nullable=False, index=True),
    Column("erased_at", UtcDateTime, nullable=False),
    Column("auth_method", String(16), nullable=False),
    Column("client_address", String(64), nullable=False),
    Column("session_id", String(64), nullable=True),
)

DELAY_COLUMN: dict[Direction, str] = {
    "caller_to_agent": "delay_caller_to_agent_ms",
    "agent_to_caller": "delay_agent_to_caller_ms",
}


def summary_of(row: Row[Any]) -> CallSummary:
    m = row._mapping
    return CallSummary(
        call_sid=m["call_sid"],
        agent_sid=m["agent_sid"],
        caller_number=m["caller_number"],
        agent_number=m["agent_number"],
        dialled_number=m["dialled_number"],
        caller_language=m["caller_language"],
        agent_language=m["agent_language"],
        engine=m["engine"],
        started_at=m["started_at"],
        answered_at=m["answered_at"],
        ended_at=m["ended_at"],
        end_reason=m["end_reason"],
        end_detail=m["end_detail"] or "",
    )


def segment_of(row: Row[Any]) -> Segment:
    m = row._mapping
    return Segment(
        direction=cast(Direction, m["direction"]),
        seq=m["seq"],
        source_text=m["source_text"],
        translated_text=m["translated_text"],
        start_ms=m["start_ms"],
        end_ms=m["end_ms"],
        delay_ms=m["delay_ms"],
    )


def delays_of(row: Row[Any]) -> dict[Direction, int | None]:
    m = row._mapping
    return {direction: m[column] for direction, column in DELAY_COLUMN.items()}
