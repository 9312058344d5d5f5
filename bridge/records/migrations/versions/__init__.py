"""Schema revisions, oldest first (``r0001_...``). Alembic loads them by path."""
