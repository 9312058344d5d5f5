"""Erasures: who erased which call when (``DELETE /api/calls/<sid>``), never what it held.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        # The CallSid only: what was erased, not a trace of what it held.
        sa.Column("call_sid", sa.String(64), nullable=False, index=True),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        # The token is no identity: how the admin authenticated ("bearer" or "console"), from
        # which address, and for the console the session's id.
        sa.Column("auth_method", sa.String(16), nullable=False),
        sa.Column("client_address", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    op.drop_index("ix_erasures_call_sid", table_name="erasures")
    op.drop_table("erasures")
