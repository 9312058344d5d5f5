"""Retention (RETENTION_DAYS) and erasure in the call store, on SQLite and PostgreSQL.

The retention job runs on its own thread with an injected clock: the tests move the clock
and wait (with a deadline) for the job's next pass, never for real days or a fixed sleep.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import func, inspect, select, text

from bridge.calls.events import EventHub
from bridge.records.erasure import Eraser, delete_older_than
from bridge.records.store import MIGRATIONS_DIR, CallStore
from bridge.records.tables import calls, erasures, segments
from bridge.settings.env import ConfigError, Settings
from bridge.settings.privacy import DEFAULT_RETENTION_DAYS
from tests.call_events import T0, agent_sid_of, call_events, wait_until
from tests.records.test_store import db_url  # noqa: F401 - the fixture: one run per database

# Generous: a loaded machine may take seconds; passing tests never wait it out.
SETTLE_S = 30.0


@pytest.fixture
def store(db_url: str) -> Iterator[CallStore]:  # noqa: F811 - db_url is the imported fixture
    s = CallStore(db_url)
    s.migrate()
    yield s
    s.close(timeout=10)


def record(store: CallStore, sids_at: dict[str, datetime]) -> None:
    """Write whole calls (start, transcript, end) through the store's own writer."""
    hub = EventHub()
    store.start(hub)
    events = [e for sid, at in sids_at.items() for e in call_events(sid, at=at)]
    for e in events:
        hub.publish(e)

    def ended() -> bool:
        return all((d := store.get_call(s)) and d.summary.ended_at for s in sids_at)

    assert wait_until(ended, SETTLE_S), "the calls never reached the store"


def segment_count(store: CallStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(segments)).scalar_one())


def test_the_periodic_job_deletes_calls_past_retention_by_its_clock(store: CallStore) -> None:
    record(store, {"CAold": T0, "CAnew": T0 + timedelta(days=20)})
    now = [T0 + timedelta(days=29)]
    job = store.start_retention(30, clock=lambda: now[0], interval_s=0.02)
    assert job is not None
    assert store.start_retention(30) is None  # once per store
    assert wait_until(lambda: job.runs >= 2, SETTLE_S)
    assert store.get_call("CAold") is not None  # 29 days: kept
    now[0] = T0 + timedelta(days=30, seconds=1)
    # Counted once the pass that deleted it is over (not merely once the row is gone).
    assert wait_until(lambda: job.deleted == 1, SETTLE_S)
    assert store.get_call("CAold") is None
    assert store.get_call(agent_sid_of("CAold")) is None
    assert store.get_call("CAnew") is not None
    assert segment_count(store) == 3  # CAnew's transcript only: the old one went with it
    now[0] = T0 + timedelta(days=51)
    assert wait_until(lambda: store.list_calls() == ([], None), SETTLE_S)
    assert segment_count(store) == 0
    store.close()
    store.close()  # idempotent, the job's thread included
    assert job.stop(1.0)


def test_deletes_in_batches_until_nothing_is_left(store: CallStore) -> None:
    record(store, {f"CA{i}": T0 + timedelta(hours=i) for i in range(5)})
    assert delete_older_than(store.engine, T0 + timedelta(hours=3, minutes=1), batch=2) == 4
    assert [c.call_sid for c in store.list_calls()[0]] == ["CA4"]
    assert delete_older_than(store.engine, T0) == 0


def test_erasing_removes_the_call_and_records_who_without_content(store: CallStore) -> None:
    record(store, {"CAgone": T0, "CAkept": T0})
    who = Eraser("console", "192.0.2.7", "session-id-1")
    # Found by the agent leg's CallSid too; the caller's CallSid is what is recorded.
    assert store.erase(agent_sid_of("CAgone"), who, at=T0 + timedelta(days=1)) == "CAgone"
    assert store.get_call("CAgone") is None
    assert store.get_call("CAkept") is not None
    assert segment_count(store) == 3
    assert store.erase("CAgone", who) is None  # nothing left to erase: nothing recorded
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(erasures))]
    assert len(rows) == 1
    row = rows[0]
    assert row["call_sid"] == "CAgone"
    assert row["erased_at"] == T0 + timedelta(days=1)
    assert (row["auth_method"], row["client_address"], row["session_id"]) == (
        "console",
        "192.0.2.7",
        "session-id-1",
    )
    assert set(row) == {
        "id",
        "call_sid",
        "erased_at",
        "auth_method",
        "client_address",
        "session_id",
    }


def test_upgrades_a_database_of_the_previous_schema_keeping_its_calls(
    db_url: str,  # noqa: F811 - the imported fixture
) -> None:
    s = CallStore(db_url)
    try:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with s.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0001")
        assert "erasures" not in inspect(s.engine).get_table_names()
        with s.engine.begin() as conn:
            conn.execute(
                calls.insert().values(
                    call_sid="CAbefore",
                    caller_number="+34911222333",
                    dialled_number="+15550002222",
                    caller_language="es",
                    agent_language="en",
                    engine="openai",
                    started_at=T0,
                    ended_at=T0 + timedelta(minutes=1),
                )
            )
        s.migrate()
        with s.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0002"
        assert "erasures" in inspect(s.engine).get_table_names()
        assert s.get_call("CAbefore") is not None
        assert s.erase("CAbefore", Eraser("bearer", "127.0.0.1")) == "CAbefore"
    finally:
        s.close()


def _settings(tmp_path: Path, **env: str) -> Settings:
    base = {
        "PUBLIC_BASE_URL": "https://bridge.example.com",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "twilio-token",
        "AGENT_NUMBER": "+15557654321",
        "ENGINE": "relay",
        "DATABASE_URL": f"sqlite:///{tmp_path}/calls.sqlite3",
    }
    return Settings.from_env({**base, **env}, env_file=None)


def test_retention_days_setting(tmp_path: Path) -> None:
    assert _settings(tmp_path).retention_days == DEFAULT_RETENTION_DAYS == 30
    assert _settings(tmp_path, RETENTION_DAYS="7").retention_days == 7
    assert _settings(tmp_path, RETENTION_DAYS="0").retention_days is None
    assert _settings(tmp_path, RETENTION_DAYS="off").retention_days is None
    assert _settings(tmp_path, RETENTION_DAYS="OFF").retention_days is None
    for bad in ("-1", "a week", "99999999"):
        with pytest.raises(ConfigError, match="RETENTION_DAYS"):
            _settings(tmp_path, RETENTION_DAYS=bad)
