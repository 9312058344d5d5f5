"""Console sessions and the API's and /metrics' authorisation.

The admin token is exchanged once, at login, for a signed session that expires, that logout
ends on the server, that every instance sharing the token accepts; failed logins are limited
per address; state-changing requests need the session's CSRF token; /metrics may want a token.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from bridge.app import create_app
from bridge.engines.registry import settings_from_env
from bridge.web import api, console
from bridge.web.api import COOKIE, CSRF_HEADER
from bridge.web.auth import LOGIN_FAILURES, LoginLimiter
from bridge.web.sessions import SESSION_MAX_AGE_S, ConsoleSessions, Revocations, installed
from tests.bridge_process import AGENT_NUMBER, free_port
from tests.redis_server import redis_url

TOKEN = "console-auth-token-3e9a7b51"
METRICS_TOKEN = "metrics-auth-token-8c2d4f60"
ORIGIN = "https://bridge.example.com"


def make_app(tmp_path: Path, **extra: str) -> Flask:
    env = {
        "PUBLIC_BASE_URL": ORIGIN,
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "twilio-token",
        "AGENT_NUMBER": AGENT_NUMBER,
        "ENGINE": "relay",
        "ADMIN_TOKEN": TOKEN,
        "DATABASE_URL": f"sqlite:///{tmp_path}/calls-{len(list(tmp_path.iterdir()))}.sqlite3",
        **extra,
    }
    return create_app(settings_from_env(env, env_file=None))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path)
    yield app
    close_app(app)


def close_app(app: Flask) -> None:
    app.extensions["bridge.web.live"].close()
    app.extensions["bridge.records.store"].close()


def log_in(client: FlaskClient, token: str = TOKEN, address: str = "192.0.2.1") -> int:
    response = client.post(
        "/console/login", data={"token": token}, environ_base={"REMOTE_ADDR": address}
    )
    return response.status_code


def csrf_of(client: FlaskClient) -> str:
    page = client.get("/console").get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None, "the console page carries no CSRF token"
    meta = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    assert meta is not None and meta.group(1) == found.group(1)
    return found.group(1)


def logged_in(client: FlaskClient) -> bool:
    ok = client.get("/api/calls").status_code == 200
    page = client.get("/console").get_data(as_text=True)
    assert ok == ("captions-" in page)  # the console and the API agree
    return ok


def session_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    return cookie.value


def test_login_exchanges_the_token_for_a_session(app: Flask) -> None:
    client = app.test_client()
    assert not logged_in(client)
    assert log_in(client) == 303
    assert TOKEN not in session_cookie(client)
    assert logged_in(client)


def test_a_session_expires(app: Flask) -> None:
    client = app.test_client()
    log_in(client)
    assert logged_in(client)
    sessions = installed(app.extensions)
    assert sessions is not None
    sessions.clock = lambda: time.time() + SESSION_MAX_AGE_S - 60
    assert logged_in(client)
    sessions.clock = lambda: time.time() + SESSION_MAX_AGE_S + 5
    assert not logged_in(client)


def test_logout_ends_the_session_even_for_a_copy_of_the_cookie(app: Flask) -> None:
    client = app.test_client()
    log_in(client)
    copy = session_cookie(client)
    response = client.post("/console/logout", data={"csrf_token": csrf_of(client)})
    assert response.status_code == 303
    assert client.get_cookie(COOKIE) is None
    client.set_cookie(COOKIE, copy)  # replayed from elsewhere
    assert not logged_in(client)
    assert log_in(client) == 303 and logged_in(client)  # a new login is a new session


@pytest.mark.parametrize(
    ("form", "headers"),
    [
        ({}, {}),
        ({"csrf_token": "0" * 64}, {}),
        ({"csrf_token": "<right>"}, {"Origin": "https://evil.example.net"}),
        ({"csrf_token": "<right>"}, {"Origin": "null"}),
    ],
)
def test_logout_without_the_csrf_token_or_from_another_site_is_refused(
    app: Flask, form: dict[str, str], headers: dict[str, str]
) -> None:
    client = app.test_client()
    log_in(client)
    right = csrf_of(client)
    data = {k: right if v == "<right>" else v for k, v in form.items()}
    response = client.post("/console/logout", data=data, headers=headers)
    assert response.status_code == 403
    assert logged_in(client)  # the session goes on


def test_logins_from_another_site_are_refused(app: Flask) -> None:
    client = app.test_client()
    for origin in ("https://evil.example.net", "null"):
        response = client.post("/console/login", data={"token": TOKEN}, headers={"Origin": origin})
        assert response.status_code == 403 and client.get_cookie(COOKIE) is None
    response = client.post("/console/login", data={"token": TOKEN}, headers={"Origin": ORIGIN})
    assert response.status_code == 303


def test_failed_logins_are_limited_per_address(app: Flask) -> None:
    client = app.test_client()
    for _ in range(LOGIN_FAILURES):
        assert log_in(client, "wrong-token-guess-0000", "192.0.2.7") == 401
    # Now even the right token waits: guesses are not checked at all.
    response = client.post(
        "/console/login", data={"token": TOKEN}, environ_base={"REMOTE_ADDR": "192.0.2.7"}
    )
    assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0
    assert "Too many wrong tokens" in response.get_data(as_text=True)
    assert client.get_cookie(COOKIE) is None
    assert log_in(client, TOKEN, "192.0.2.8") == 303  # another address is not held up
    limiter: LoginLimiter = app.extensions[console.LIMITER_KEY]
    limiter.clock = lambda: time.monotonic() + limiter.window_s + 1
    assert log_in(app.test_client(), TOKEN, "192.0.2.7") == 303


def test_the_login_limiter_remembers_a_bounded_number_of_addresses() -> None:
    limiter = LoginLimiter(failures=2, window_s=60, clients=3)
    for n in range(50):
        limiter.failed(f"198.51.100.{n}")
        limiter.failed(f"198.51.100.{n}")
    assert len(limiter) == 3
    assert limiter.retry_after("198.51.100.49") is not None  # the newest are kept
    assert limiter.retry_after("198.51.100.0") is None


def test_sessions_verify_on_every_instance_sharing_the_token(tmp_path: Path) -> None:
    first, second = make_app(tmp_path), make_app(tmp_path)
    try:
        client = first.test_client()
        log_in(client)
        other = second.test_client()
        other.set_cookie(COOKIE, session_cookie(client))
        assert logged_in(other)
    finally:
        close_app(first)
        close_app(second)


def test_a_logout_holds_on_every_instance_through_redis() -> None:
    with redis_url() as url:
        first = ConsoleSessions(TOKEN, Revocations(redis.Redis.from_url(url)))
        second = ConsoleSessions(TOKEN, Revocations(redis.Redis.from_url(url)))
        value, session = first.issue()
        assert second.verify(value) == session
        first.end(session)
        assert second.verify(value) is None


def test_a_session_is_refused_when_redis_cannot_say_whether_it_ended() -> None:
    gone = redis.Redis(port=free_port(), socket_connect_timeout=1, socket_timeout=1)
    sessions = ConsoleSessions(TOKEN, Revocations(gone))
    value, _ = sessions.issue()
    assert sessions.verify(value) is None
    assert ConsoleSessions(TOKEN).verify(value) is not None  # the same cookie, no Redis


def test_a_session_signed_with_another_token_is_refused() -> None:
    value, _ = ConsoleSessions("another-admin-token-123456").issue()
    assert ConsoleSessions(TOKEN).verify(value) is None
    assert ConsoleSessions(TOKEN).verify(value[:-2] + "xx") is None


def test_state_changing_api_requests_with_the_cookie_need_the_csrf_token(app: Flask) -> None:
    """The check is in the API's authorisation, for every state-changing route (DELETE)."""
    client = app.test_client()
    log_in(client)
    cookie, csrf = session_cookie(client), csrf_of(client)
    headers = {"Cookie": f"{COOKIE}={cookie}"}
    cases = [
        ({}, 403),
        ({CSRF_HEADER: "f" * 64}, 403),
        ({CSRF_HEADER: csrf, "Origin": "https://evil.example.net"}, 403),
        ({CSRF_HEADER: csrf}, None),
        ({"Authorization": f"Bearer {TOKEN}"}, None),  # header auth: no browser sends it
    ]
    for extra, status in cases:
        with app.test_request_context("/api/calls", method="DELETE", headers={**headers, **extra}):
            answer = api._authorise()
            got = None if answer is None else answer[1] if isinstance(answer, tuple) else 200
            assert got == status, extra


def test_the_bearer_header_keeps_working(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/api/calls", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_metrics_are_open_without_a_metrics_token(app: Flask) -> None:
    assert app.test_client().get("/metrics").status_code == 200


def test_metrics_want_the_metrics_token_when_one_is_set(tmp_path: Path) -> None:
    app = make_app(tmp_path, METRICS_TOKEN=METRICS_TOKEN)
    try:
        client = app.test_client()
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": "Bearer x"}):
            response = client.get("/metrics", headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
            assert "bridge_active_calls" not in response.get_data(as_text=True)
        response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert response.status_code == 200
        assert "bridge_active_calls" in response.get_data(as_text=True)
    finally:
        close_app(app)
