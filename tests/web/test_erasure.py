"""``DELETE /api/calls/<sid>``: one call erased from the store, the live view and Redis, and
the erasure recorded (who, when) without the call's content.

Driven in-process (Flask's test client) with call events published on the app's hub, as the
call code does; the console session and its CSRF token come from the real login.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from bridge.cluster.registry import CallRegistry, agent_key, call_key, end_key
from bridge.records.store import CallStore
from bridge.records.tables import erasures
from bridge.web.api import COOKIE, CSRF_HEADER
from bridge.web.live import LiveCalls
from bridge.web.sessions import installed
from tests.call_events import agent_sid_of, call_events, wait_until
from tests.redis_server import redis_url
from tests.web.test_api import AUTH, TOKEN, close_app, make_app, publish
from tests.web.test_console_auth import TOKEN as CONSOLE_TOKEN
from tests.web.test_console_auth import csrf_of, log_in, session_cookie
from tests.web.test_console_auth import make_app as make_console_app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path)
    yield app
    close_app(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def erasure_rows(app: Flask) -> list[dict[str, object]]:
    store: CallStore = app.extensions["bridge.records.store"]
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(erasures))]


# Generous: a loaded machine may take seconds to write a call; passing tests never wait it.
SETTLE_S = 30.0


def recorded(app: Flask, sid: str, *, ended: bool = True) -> None:
    """Wait until both the store and the live view have the call (and its end)."""
    store: CallStore = app.extensions["bridge.records.store"]
    live: LiveCalls = app.extensions["bridge.web.live"]

    def there() -> bool:
        detail = store.get_call(sid)
        done = detail is not None and (detail.summary.ended_at is not None or not ended)
        return done and live.detail(sid) is not None

    assert wait_until(there, SETTLE_S), f"{sid} never reached the store and the live view"


def ended_call(app: Flask, sid: str) -> None:
    publish(app, call_events(sid))
    recorded(app, sid)


def gone_everywhere(client: FlaskClient, sid: str) -> None:
    for path in ("", "/transcript.txt", "/transcript.vtt"):
        assert client.get(f"/api/calls/{sid}{path}", headers=AUTH).status_code == 404, path
    listed = client.get("/api/calls", headers=AUTH).json
    assert listed is not None
    assert sid not in {c["call_sid"] for c in listed["calls"]}


def test_bearer_erases_an_ended_call_everywhere_and_records_who(
    app: Flask, client: FlaskClient
) -> None:
    ended_call(app, "CAgone")
    ended_call(app, "CAkept")
    response = client.delete(
        f"/api/calls/{agent_sid_of('CAgone')}",  # either leg's CallSid
        headers=AUTH,
        environ_base={"REMOTE_ADDR": "198.51.100.4"},
    )
    assert response.status_code == 200, response.json
    assert response.json is not None and response.json["erased"] == "CAgone"
    gone_everywhere(client, "CAgone")
    live: LiveCalls = app.extensions["bridge.web.live"]
    assert live.detail("CAgone") is None  # not even lingering in the live view
    assert client.get("/api/calls/CAkept", headers=AUTH).status_code == 200
    rows = erasure_rows(app)
    assert len(rows) == 1
    row = rows[0]
    assert (row["call_sid"], row["auth_method"], row["client_address"], row["session_id"]) == (
        "CAgone",
        "bearer",
        "198.51.100.4",
        None,
    )
    assert isinstance(row["erased_at"], datetime)
    assert response.json["erased_at"] == row["erased_at"].isoformat()
    # Who and when only: nothing the call held (numbers, languages, transcript).
    text = repr(rows)
    for content in ("+34911222333", "Hola", "Hello", "openai"):
        assert content not in text
    assert client.delete("/api/calls/CAgone", headers=AUTH).status_code == 404


def test_unknown_calls_and_bad_sids_are_404(client: FlaskClient, app: Flask) -> None:
    assert client.delete("/api/calls/CAnever", headers=AUTH).status_code == 404
    assert client.delete("/api/calls/not-a-sid!", headers=AUTH).status_code == 404
    assert erasure_rows(app) == []


def test_erasure_needs_the_admin_token(app: Flask, client: FlaskClient) -> None:
    ended_call(app, "CAsafe")
    assert client.delete("/api/calls/CAsafe").status_code == 401
    wrong = {"Authorization": "Bearer wrong-token-wrong-token"}
    assert client.delete("/api/calls/CAsafe", headers=wrong).status_code == 401
    assert client.get("/api/calls/CAsafe", headers=AUTH).status_code == 200
    assert erasure_rows(app) == []


def test_a_console_session_needs_its_csrf_token_and_is_recorded(app: Flask) -> None:
    ended_call(app, "CAconsole")
    client = app.test_client()
    assert log_in(client, TOKEN) == 303
    cookie, csrf = session_cookie(client), csrf_of(client)
    headers = {"Cookie": f"{COOKIE}={cookie}"}
    env = {"REMOTE_ADDR": "203.0.113.9"}
    for refused in ({}, {CSRF_HEADER: "f" * 64}, {CSRF_HEADER: csrf, "Origin": "https://x.test"}):
        answer = client.delete("/api/calls/CAconsole", headers={**headers, **refused})
        assert answer.status_code == 403, refused
    assert client.get("/api/calls/CAconsole", headers=AUTH).status_code == 200
    answer = client.delete(
        "/api/calls/CAconsole", headers={**headers, CSRF_HEADER: csrf}, environ_base=env
    )
    assert answer.status_code == 200, answer.json
    gone_everywhere(client, "CAconsole")
    (row,) = erasure_rows(app)
    assert (row["auth_method"], row["client_address"]) == ("console", "203.0.113.9")
    sessions = installed(app.extensions)
    assert sessions is not None
    session = sessions.verify(cookie)
    assert session is not None and row["session_id"] == session.sid != cookie


def test_a_call_in_progress_is_refused_with_409(app: Flask, client: FlaskClient) -> None:
    publish(app, call_events("CAlive", reason=None))
    recorded(app, "CAlive", ended=False)
    answer = client.delete("/api/calls/CAlive", headers=AUTH)
    assert answer.status_code == 409
    assert client.get("/api/calls/CAlive", headers=AUTH).status_code == 200
    assert erasure_rows(app) == []


def test_a_call_open_in_the_store_and_not_followed_here_is_refused(
    app: Flask, client: FlaskClient
) -> None:
    """Its end not written yet (or live on another instance): its next events would write
    it again, so it is not erased until its end is recorded."""
    publish(app, call_events("CAopen", reason=None))
    recorded(app, "CAopen", ended=False)
    live: LiveCalls = app.extensions["bridge.web.live"]
    live.erase("CAopen")  # as an instance that never followed it
    assert client.delete("/api/calls/CAopen", headers=AUTH).status_code == 409
    assert erasure_rows(app) == []


def test_the_registry_drops_an_erased_calls_keys_but_keeps_its_end_claim() -> None:
    with redis_url() as url:
        client = redis.Redis.from_url(url, decode_responses=True)
        registry = CallRegistry(client, "instance-a")
        client.hset(call_key("CAx"), mapping={"sid": "CAx", "caller_number": "+34911222333"})
        client.set(agent_key("CBx"), "CAx")
        assert registry.claim_end("CAx", "caller_hung_up")
        assert registry.erase("CAx", "CBx") == 2
        assert not client.exists(call_key("CAx"), agent_key("CBx"))
        assert client.get(end_key("CAx")) == "caller_hung_up"  # refuses a replayed webhook
        assert registry.erase("CAx", None) == 0  # idempotent
        client.delete(end_key("CAx"))  # this Redis may be shared with the cluster tests


def test_with_redis_a_call_live_in_the_cluster_is_refused_and_an_ended_one_erased_there(
    tmp_path: Path,
) -> None:
    with redis_url() as url:
        app = make_console_app(tmp_path, REDIS_URL=url)
        try:
            assert "bridge.shared_calls" in app.extensions  # the cluster's answers
            client = app.test_client()
            bearer = {"Authorization": f"Bearer {CONSOLE_TOKEN}"}
            r = redis.Redis.from_url(url, decode_responses=True)
            ended_call(app, "CAshared")
            # Another instance still holds it and nobody claimed its end: in progress.
            # Every key with a TTL, as the bridge writes them: this Redis may be shared with
            # the cluster tests, which check that no key lives forever.
            r.hset(call_key("CAshared"), mapping={"sid": "CAshared", "home": "instance-b"})
            r.expire(call_key("CAshared"), 600)
            r.set(agent_key(agent_sid_of("CAshared")), "CAshared", ex=600)
            assert client.delete("/api/calls/CAshared", headers=bearer).status_code == 409
            assert erasure_rows(app) == []
            r.set(end_key("CAshared"), "caller_hung_up", ex=600)  # its end claimed: over
            answer = client.delete("/api/calls/CAshared", headers=bearer)
            assert answer.status_code == 200, answer.json
            assert not r.exists(call_key("CAshared"), agent_key(agent_sid_of("CAshared")))
            assert r.get(end_key("CAshared")) == "caller_hung_up"
            assert client.get("/api/calls/CAshared", headers=bearer).status_code == 404
            assert len(erasure_rows(app)) == 1
        finally:
            redis.Redis.from_url(url).delete(
                call_key("CAshared"), agent_key(agent_sid_of("CAshared")), end_key("CAshared")
            )
            close_app(app)
