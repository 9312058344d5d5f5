"""Shutdown of one process's call control (bridge/calls/lifetime.py, bridge/app.py's SIGTERM path).

Only the drain's start is tested here: whole calls drained under gunicorn are in
tests/test_call_flow.py and tests/test_cluster.py.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from bridge.app import create_app
from bridge.calls.control import CallControl
from bridge.engines.registry import settings_from_env
from tests.bridge_process import AGENT_NUMBER

# How long the interrupted handler gives the second one's waiter to fail. Only a bound on how
# long a regression may take to show: the fixed code passes whatever this is.
WAITER_GRACE_S = 1.0
DRAIN_DEADLINE_S = 30.0


def test_a_second_sigterm_inside_the_first_handler_is_harmless(tmp_path: Path) -> None:
    """A platform that signals every process (the gunicorn master then forwards its own
    SIGTERM) gives the worker two SIGTERMs at once. Python runs the second handler inside the
    first, in the same thread, between two of its bytecodes: here while the first is still
    beginning the drain. Its waiter must wait for the drain, not join a drainer thread that
    has not started ("cannot join thread before it is started"), and nothing may deadlock."""
    env = {
        "PUBLIC_BASE_URL": "https://bridge.example.com",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "twilio-token",
        "AGENT_NUMBER": AGENT_NUMBER,
        "ENGINE": "relay",
        "DATABASE_URL": f"sqlite:///{tmp_path}/calls.sqlite3",
    }
    app = create_app(settings_from_env(env, env_file=None))
    control: CallControl = app.extensions["bridge.calls.control"]
    failures: list[BaseException] = []
    waiters: list[threading.Thread] = []

    def wait_for_drain() -> None:
        try:
            control.finish_shutdown(timeout=DRAIN_DEADLINE_S)
        except RuntimeError as exc:  # the regression: recorded, then asserted on
            failures.append(exc)

    def on_sigterm() -> None:
        # What bridge.app.begin_shutdown does for each control of the process.
        control.begin_shutdown()
        waiter = threading.Thread(target=wait_for_drain, name="test-shutdown-waiter")
        waiters.append(waiter)
        waiter.start()

    class SecondSigterm(logging.Handler):
        """Runs the second handler where a signal could interrupt the first: while it logs
        that the drain begins, before its drainer thread has started."""

        fired = False

        def emit(self, record: logging.LogRecord) -> None:
            if self.fired or not record.getMessage().startswith("shutting down"):
                return
            self.fired = True
            on_sigterm()
            waiters[0].join(WAITER_GRACE_S)

    logger = logging.getLogger("bridge.calls.lifetime")
    handler, level = SecondSigterm(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        on_sigterm()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    try:
        assert handler.fired, "the drain never said it began"
        assert len(waiters) == 2
        deadline = time.monotonic() + DRAIN_DEADLINE_S
        for waiter in waiters:
            waiter.join(max(0.0, deadline - time.monotonic()))
        assert not any(w.is_alive() for w in waiters), "the drain never finished"
        assert failures == []
        assert control.draining
        control.finish_shutdown(timeout=DRAIN_DEADLINE_S)  # again, from here: still harmless
    finally:
        app.extensions["bridge.web.live"].close()
        app.extensions["bridge.records.store"].close()
