"""Who may use the console, the API and ``/metrics``: token checks and the login rate limit.

Tokens are compared in constant time, as bytes (``compare_digest`` refuses non-ASCII str, and a
header may carry anything); a value longer than any real token is not compared at all.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

MAX_TOKEN_CHARS: Final = 512
# Failed logins one client address may make in LOGIN_WINDOW_S before it must wait. A token is
# at least 16 characters (bridge/settings/env.py), so this is a backstop, not the defence.
LOGIN_FAILURES: Final = 5
LOGIN_WINDOW_S: Final = 15 * 60
# Addresses remembered; past this the one idle longest is forgotten (bounded memory).
LOGIN_CLIENTS: Final = 10_000
STATE_CHANGING: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def token_matches(candidate: str | None, expected: str | None) -> bool:
    if not expected or not candidate or len(candidate) > MAX_TOKEN_CHARS:
        return False
    return hmac.compare_digest(candidate.encode(), expected.encode())


def bearer(authorization: str | None) -> str:
    """The credentials of an ``Authorization: Bearer ...`` header's value, or ""."""
    scheme, _, credentials = (authorization or "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def bearer_matches(authorization: str | None, expected: str) -> bool:
    return token_matches(bearer(authorization), expected)


def same_origin(origin: str | None, hosts: set[str]) -> bool:
    """A browser's ``Origin`` (sent with every POST) names one of our ``hosts``; no ``Origin``
    at all is a non-browser client, which no other site can drive. ``null`` (a sandboxed or
    privacy-hidden origin) could be anyone's, so it is not ours."""
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc in hosts


class LoginLimiter:
    """At most LOGIN_FAILURES failed logins per client address in a sliding LOGIN_WINDOW_S;
    further attempts are refused without looking at the token. Per process: with several
    instances each counts its own (docs/security.md)."""

    def __init__(
        self,
        failures: int = LOGIN_FAILURES,
        window_s: float = LOGIN_WINDOW_S,
        clients: int = LOGIN_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.window_s = window_s
        self.clients = clients
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        """Addresses remembered."""
        return len(self._seen)

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again, or None if it may now."""
        with self._lock:
            times = self._recent(address)
            if times is None or len(times) < self.failures:
                return None
            return max(1.0, times[0] + self.window_s - self.clock())

    def failed(self, address: str) -> None:
        with self._lock:
            times = self._recent(address)
            if times is None:
                times = self._seen[address] = deque(maxlen=self.failures)
            times.append(self.clock())
            self._seen.move_to_end(address)
            while len(self._seen) > self.clients:
                self._seen.popitem(last=False)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._seen.pop(address, None)

    def _recent(self, address: str) -> deque[float] | None:
        times = self._seen.get(address)
        if times is None:
            return None
        while times and times[0] <= self.clock() - self.window_s:
            times.popleft()
        if not times:
            del self._seen[address]
            return None
        return times
