"""Calls and their transcript segments.

Revision ID: 0001
Revises:
Create Date: 2026-05-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Twilio SIDs are 34 characters; numbers may be sip: addresses, hence the wider columns.
_SID = 64
_ADDRESS = 255


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_sid", sa.String(_SID), nullable=False, unique=True),
        sa.Column("agent_sid", sa.String(_SID), nullable=True, index=True),
        sa.Column("caller_number", sa.String(_ADDRESS), nullable=False),
        sa.Column("agent_number", sa.String(_ADDRESS), nullable=True),
        sa.Column("dialled_number", sa.String(_ADDRESS), nullable=False),
        sa.Column("caller_language", sa.String(16), nullable=False),
        sa.Column("agent_language", sa.String(16), nullable=False),
        sa.Column("engine", sa.String(32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(64), nullable=True, index=True),
        sa.Column("end_detail", sa.Text, nullable=False, server_default=""),
        sa.Column("delay_caller_to_agent_ms", sa.Integer, nullable=True),
        sa.Column("delay_agent_to_caller_ms", sa.Integer, nullable=True),
    )
    # Newest first with a (started_at, id) cursor: the list's only sort order.
    op.create_index("ix_calls_started_at_id", "calls", ["started_at", "id"])
    op.create_index("ix_calls_caller_number", "calls", ["caller_number"])
    op.create_index("ix_calls_agent_number", "calls", ["agent_number"])
    op.create_table(
        "segments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "call_id",
            sa.Integer,
            sa.ForeignKey("calls.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("direction", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("source_text", sa.Text, nullable=False),
        sa.Column("translated_text", sa.Text, nullable=False),
        sa.Column("start_ms", sa.Integer, nullable=False),
        sa.Column("end_ms", sa.Integer, nullable=False),
        sa.Column("delay_ms", sa.Integer, nullable=True),
        # A segment event seen twice (a retried batch) is stored once.
        sa.UniqueConstraint("call_id", "direction", "seq", name="uq_segments_call_direction_seq"),
    )


def downgrade() -> None:
    op.drop_table("segments")
    op.drop_index("ix_calls_agent_number", table_name="calls")
    op.drop_index("ix_calls_caller_number", table_name="calls")
    op.drop_index("ix_calls_started_at_id", table_name="calls")
    op.drop_table("calls")
