"""Alembic's environment: always "online", on the connection ``CallStore.migrate()`` passes in.

The bridge runs migrations itself (no ``alembic.ini``, no logging set-up here: the bridge's
logging is configured already). On PostgreSQL a transaction-scoped advisory lock serialises
two instances starting at once (a rolling deploy), so only one of them creates the tables.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

# Any fixed number: it only has to be the same for every instance of the bridge.
_PG_MIGRATION_LOCK = 0x62726467  # "brdg"


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=False)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        context.run_migrations()


connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through CallStore.migrate(), which passes a connection")
_run(connection)
