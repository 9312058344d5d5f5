"""The services beside the engines a deployment names: the call store's database
(``DATABASE_URL``), Redis for several instances (``REDIS_URL``), and the tokens that guard the
admin API and ``/metrics``. Nothing here echoes a value: a URL may carry a password."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bridge.settings import values as val
from bridge.settings.values import ConfigError

# Relative to the working directory; the store creates the folder on first start.
DEFAULT_DATABASE_URL = "sqlite:///data/bridge.sqlite3"
# A bearer token guessable in an afternoon is no protection for every caller's transcript.
ADMIN_TOKEN_MIN_CHARS = 16


def database_url(env: Mapping[str, str]) -> str:
    """DATABASE_URL: SQLite (embedded) or PostgreSQL, as an SQLAlchemy URL.

    ``postgres://`` and ``postgresql://`` (what hosting providers hand out) mean the psycopg 3
    driver this project installs, not SQLAlchemy's default psycopg2.
    """
    raw = val.get(env, "DATABASE_URL") or DEFAULT_DATABASE_URL
    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw.removeprefix("postgres://")
    try:
        url = make_url(raw)
    except ArgumentError:
        # Not echoed: a malformed URL may still contain a password.
        raise ConfigError(
            "DATABASE_URL: not a database URL (sqlite:///path or postgresql://...)"
        ) from None
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    if url.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise ConfigError(
            f"DATABASE_URL: {url.drivername!r} is not supported (sqlite or postgresql)"
        )
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        # Each pooled connection would get its own empty in-memory database.
        raise ConfigError("DATABASE_URL: SQLite needs a file (sqlite:///data/bridge.sqlite3)")
    return url.render_as_string(hide_password=False)


def redis_url(env: Mapping[str, str]) -> str | None:
    raw = val.get(env, "REDIS_URL")
    if raw is None:
        return None
    if urlsplit(raw).scheme not in ("redis", "rediss", "unix"):
        # Not echoed: it may contain a password.
        raise ConfigError("REDIS_URL: not a Redis URL (redis://host:6379/0, rediss://, unix://)")
    return raw


def passwords(url: str | None) -> list[str]:
    """The password in a database or Redis URL as written and percent-decoded (a library's
    message may show either); none if it has none."""
    try:
        password = None if url is None else urlsplit(url).password
    except ValueError:
        return []
    return [] if password is None else [password, unquote(password)]


def token(env: Mapping[str, str], name: str) -> str | None:
    token = val.get(env, name)
    if token is not None and len(token) < ADMIN_TOKEN_MIN_CHARS:
        raise ConfigError(
            f"{name}: too short (at least {ADMIN_TOKEN_MIN_CHARS} characters; "
            "e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token
