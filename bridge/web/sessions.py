"""The console's login sessions: signed, expiring, revocable, each with its own CSRF token.

The admin token is typed once, at login; the browser then holds a session, never the token:
a session id and its issue time signed with itsdangerous (``URLSafeTimedSerializer``). The
signing key is derived from ``ADMIN_TOKEN``, so every instance of a cluster verifies the
sessions of the others, and changing the token ends every session at once.

A session ends when it expires (SESSION_MAX_AGE_S after login) or at logout, which puts its
id on a denylist until it would have expired anyway (so the list stays bounded): in this
process's memory, and with ``REDIS_URL`` in Redis too, so a logout holds on every instance
and across restarts. Without Redis, a restart forgets logouts (the sessions still expire).
When Redis cannot be asked whether a session was ended, it is refused (fail closed).

The CSRF token of a session is an HMAC of its id: nothing to store, and only a page served to
that session can know it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from itsdangerous import BadData, URLSafeTimedSerializer

log = logging.getLogger(__name__)
# Twelve hours: a long shift logs in once; a cookie copied elsewhere stops working by the next.
SESSION_MAX_AGE_S: Final = 12 * 3600
MAX_COOKIE_CHARS: Final = 512
# A session signed this far in the future (another instance's clock) is still accepted.
CLOCK_SKEW_S: Final = 60
# Logouts remembered in memory; past this the one expiring soonest is forgotten, logged.
MAX_REVOKED: Final = 100_000
# Where an app keeps its ConsoleSessions (``app.extensions``).
SESSIONS_KEY: Final = "bridge.web.sessions"
_KEY_LABEL: Final = b"bridge.web.sessions: console session signing key v1"
_REDIS_PREFIX: Final = "bridge:console:revoked:"


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    expires_at: float  # seconds since the epoch
    csrf: str


class RedisLike(Protocol):
    """The two commands of a ``redis.Redis`` client the denylist uses."""

    def set(self, name: str, value: str, ex: int) -> Any: ...

    def exists(self, *names: str) -> Any: ...


class Revocations:
    """Ended sessions' ids until they would have expired; in Redis too when given one."""

    def __init__(self, redis: RedisLike | None = None, clock: Callable[[], float] = time.time):
        self._redis = redis
        self._clock = clock
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}

    def revoke(self, sid: str, until: float) -> None:
        now = self._clock()
        with self._lock:
            self._until = {s: t for s, t in self._until.items() if t > now}
            self._until[sid] = until
            if len(self._until) > MAX_REVOKED:
                soonest = min(self._until, key=self._until.__getitem__)
                del self._until[soonest]
                log.warning("console sessions: more than %d logouts remembered", MAX_REVOKED)
        if self._redis is not None:
            try:
                self._redis.set(_REDIS_PREFIX + sid, "1", ex=max(1, math.ceil(until - now)))
            except Exception as exc:  # noqa: BLE001 - any Redis failure: this instance still knows
                log.error("console sessions: logout not shared through Redis: %s", exc)

    def revoked(self, sid: str) -> bool:
        with self._lock:
            if self._until.get(sid, 0.0) > self._clock():
                return True
        if self._redis is None:
            return False
        try:
            return bool(self._redis.exists(_REDIS_PREFIX + sid))
        except Exception as exc:  # noqa: BLE001 - cannot tell: refuse rather than let it in
            log.warning("console sessions: Redis unreachable, session refused: %s", exc)
            return True


class ConsoleSessions:
    def __init__(
        self,
        admin_token: str,
        revocations: Revocations | None = None,
        max_age_s: float = SESSION_MAX_AGE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # A key of its own: the token itself never signs anything a browser sees.
        self._key = hmac.new(admin_token.encode(), _KEY_LABEL, hashlib.sha256).digest()
        self._serializer = URLSafeTimedSerializer(self._key, salt="console-session")
        self.revocations = revocations if revocations is not None else Revocations()
        self.max_age_s = max_age_s
        self.clock = clock

    def issue(self) -> tuple[str, Session]:
        """A new session: the cookie value to set, and the session."""
        sid = secrets.token_urlsafe(18)
        value = self._serializer.dumps({"sid": sid})
        _, signed_at = self._serializer.loads(value, return_timestamp=True)  # whole seconds
        return value, self._session(sid, signed_at.timestamp())

    def verify(self, value: str | None) -> Session | None:
        """The session a cookie holds, or None: unsigned, expired, ended or malformed."""
        if not value or len(value) > MAX_COOKIE_CHARS:
            return None
        try:
            payload, signed_at = self._serializer.loads(value, return_timestamp=True)
        except BadData:
            return None
        sid = payload.get("sid") if isinstance(payload, dict) else None
        if not isinstance(sid, str) or not sid:
            return None
        issued = signed_at.timestamp()
        age = self.clock() - issued
        if age > self.max_age_s or age < -CLOCK_SKEW_S or self.revocations.revoked(sid):
            return None
        return self._session(sid, issued)

    def end(self, session: Session) -> None:
        self.revocations.revoke(session.sid, session.expires_at + CLOCK_SKEW_S)

    def csrf_ok(self, session: Session, supplied: str | None) -> bool:
        if not supplied or len(supplied) > MAX_COOKIE_CHARS:
            return False
        return hmac.compare_digest(supplied.encode(), session.csrf.encode())

    def _session(self, sid: str, issued: float) -> Session:
        csrf = hmac.new(self._key, b"csrf:" + sid.encode(), hashlib.sha256).hexdigest()
        return Session(sid, issued + self.max_age_s, csrf)


def install(
    extensions: dict[str, Any], admin_token: str | None, redis: RedisLike | None = None
) -> None:
    """Give an app its console sessions (once; none without ADMIN_TOKEN)."""
    if admin_token is not None and SESSIONS_KEY not in extensions:
        extensions[SESSIONS_KEY] = ConsoleSessions(admin_token, Revocations(redis))


def installed(extensions: dict[str, Any]) -> ConsoleSessions | None:
    found = extensions.get(SESSIONS_KEY)
    return found if isinstance(found, ConsoleSessions) else None
