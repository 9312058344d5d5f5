"""How long calls may last, and how the process stops: the watchdog enforcing
``MAX_CALL_SECONDS``, and the drain on SIGTERM (no new calls; after ``SHUTDOWN_GRACE_SECONDS``
the rest end with a notice)."""

from __future__ import annotations

import logging
import threading
import time

from bridge.calls.book import CallBook
from bridge.calls.teardown import SESSION_JOIN_S, Teardowns
from bridge.settings.env import Settings

log = logging.getLogger(__name__)
# The time-limit notice goes out this long before MAX_CALL_SECONDS, so it is heard in full
# and the call still ends about when the limit says. The lead is at most a quarter of the
# limit: a fixed lead longer than a short limit would end every call the moment it starts.
TIME_LIMIT_NOTICE_S = 10.0
TIME_LIMIT_NOTICE_SHARE = 0.25
WATCHDOG_PERIOD_S = 0.5


def notice_at_s(max_call_s: float) -> float:
    """Seconds into a call at which its time-limit notice goes out (then the call ends)."""
    return max_call_s - min(TIME_LIMIT_NOTICE_S, max_call_s * TIME_LIMIT_NOTICE_SHARE)


class Lifetime:
    """One process's watchdog and drain."""

    def __init__(self, settings: Settings, book: CallBook, teardowns: Teardowns) -> None:
        self._settings = settings
        self._book = book
        self._teardowns = teardowns
        self._lock = threading.Lock()
        self._draining = threading.Event()
        self._watchdog: threading.Thread | None = None
        # Shutdown: claimed once without blocking (a second SIGTERM may interrupt the first
        # one's handler in the same thread, where a held lock would deadlock), then waited on
        # through ``_drained``, never by joining a thread that may not have started yet.
        self._shutdown_claim = threading.Lock()
        self._drained = threading.Event()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def watch_limits(self) -> None:
        """Start the watchdog (once): MAX_CALL_SECONDS, and transcript segments closed after
        a pause."""
        with self._lock:
            if self._watchdog is not None:
                return
            self._watchdog = threading.Thread(target=self._watch, name="watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        limit = notice_at_s(self._settings.max_call_s)
        while not self._draining.wait(WATCHDOG_PERIOD_S):
            now = time.monotonic()
            for call in self._book.calls():
                call.tick()  # close transcript segments after a pause
                if now - call.started_at >= limit and not call.ended.is_set():
                    self._teardowns.end(call, "time_limit", notice="time_limit", notify_agent=True)

    def begin_shutdown(self) -> None:
        """Stop admitting calls; after the grace period end the rest with a notice.
        Idempotent, and safe to re-enter from a signal handler: only the first call acts."""
        if not self._shutdown_claim.acquire(blocking=False):
            return  # never released: a control drains once
        self._draining.set()
        log.info(
            "shutting down: no new calls; %d active get %d s to finish",
            len(self._book.calls()),
            self._settings.shutdown_grace_s,
        )
        threading.Thread(target=self._drain, name="drainer", daemon=True).start()

    def _drain(self) -> None:
        try:
            deadline = time.monotonic() + self._settings.shutdown_grace_s
            while any(not c.ended.is_set() for c in self._book.calls()) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.2)
            for call in self._book.calls():
                self._teardowns.end(call, "shutdown", notice="shutdown", notify_agent=True)
            self._teardowns.wait(SESSION_JOIN_S + 10.0)
        except Exception:  # thread boundary: whoever waits for the drain must still be freed
            log.exception("drain failed")
        finally:
            self._drained.set()

    @property
    def drain_timeout(self) -> float:
        """How long a drain can take: the grace period, then the notices and teardown."""
        return self._settings.shutdown_grace_s + SESSION_JOIN_S + 12.0

    def finish_shutdown(self, timeout: float) -> None:
        """Block until the drain is over (gunicorn's worker_exit), at most ``timeout``.
        Idempotent; any thread, while another is still beginning the drain."""
        self.begin_shutdown()
        self._drained.wait(timeout)
