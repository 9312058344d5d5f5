"""Several bridge instances sharing one Redis, behind a load balancer that Twilio cannot see.

Twilio is told one public URL (``PUBLIC_BASE_URL``, where nobody listens, so every request
must be routed); :class:`FakeTwilio`'s ``router`` plays the balancer and sends each kind of
request (the voice webhook, each leg's Media Stream, each status callback) to the instance a
test chose, signed for the public URL as Twilio signs it.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from bridge.records.store import CallStore
from bridge.records.views import CallDetail
from tests.bridge_process import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    OPENAI_KEY,
    BridgeProcess,
    free_port,
    run_bridge,
)
from tests.fakes.openai_translate import FakeTranslationServer
from tests.fakes.twilio import FakeTwilio

# kind → the instance (index) that gets it; a tuple takes turns (round robin).
Plan = Mapping[str, int | tuple[int, ...]]
ADMIN_TOKEN = "cluster-admin-token-4e1d"


@dataclass
class Cluster:
    bridges: list[BridgeProcess]
    twilio: FakeTwilio
    database_url: str
    sent_to: list[tuple[str, int]] = field(default_factory=list)  # (kind, instance) per request

    def route(self, plan: Plan) -> None:
        """Route each kind of request as ``plan`` says (kinds it omits go to instance 0)."""
        turns = {k: itertools.cycle(v) for k, v in plan.items() if isinstance(v, tuple)}

        def router(kind: str, url: str) -> str:
            choice = plan.get(kind, 0)
            index = next(turns[kind]) if isinstance(choice, tuple) else choice
            self.sent_to.append((kind, index))
            parts = urlsplit(url)
            host = f"127.0.0.1:{self.bridges[index].port}"
            return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))

        self.sent_to.clear()
        self.twilio.router = router

    def record(self, sid: str, timeout: float = 10.0) -> CallDetail:
        """The call's record once it has ended (from the shared database)."""
        store = CallStore(self.database_url)
        try:
            deadline = time.monotonic() + timeout
            while True:
                detail = store.get_call(sid)
                if detail is not None and detail.summary.ended_at is not None:
                    return detail
                assert time.monotonic() < deadline, f"no ended record for {sid}: {detail}"
                time.sleep(0.2)
        finally:
            store.engine.dispose()

    def wait_idle(self, timeout: float = 20.0) -> None:
        """Every live instance has let go of every call."""
        deadline = time.monotonic() + timeout
        for bridge in self.bridges:
            if bridge.proc.poll() is not None:
                continue
            while bridge.metric("bridge_active_calls") != 0:
                assert time.monotonic() < deadline, f"{bridge.url} still holds a call"
                time.sleep(0.1)


def api(bridge: BridgeProcess, path: str) -> Any:
    """GET one admin API route of one instance: its JSON."""
    got = requests.get(
        f"{bridge.url}{path}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10
    )
    assert got.status_code == 200, f"{bridge.url}{path}: {got.status_code} {got.text}"
    return got.json()


def kill_instance(bridge: BridgeProcess) -> None:
    """SIGKILL the instance: its worker first would be respawned, its master alone would
    leave the worker to drain politely. Both at once, as a host that loses power."""
    worker = bridge.worker_pid()
    os.kill(bridge.proc.pid, signal.SIGKILL)
    os.kill(worker, signal.SIGKILL)
    bridge.proc.wait(timeout=5)


@contextmanager
def cluster_stack(
    log_dir: Path,
    n: int,
    redis_url: str,
    openai: FakeTranslationServer,
    env: Mapping[str, str] | None = None,
) -> Iterator[Cluster]:
    """``n`` bridges (gunicorn, the Procfile's command) sharing Redis and the call records:
    ``TEST_CLUSTER_DATABASE_URL`` (PostgreSQL in CI; not the store tests' database, whose
    tables they drop, maybe while these run in another worker) if set, else one SQLite file."""
    public = f"http://127.0.0.1:{free_port()}"  # the balancer's address: nobody listens
    database_url = (
        os.environ.get("TEST_CLUSTER_DATABASE_URL") or f"sqlite:///{log_dir / 'calls.sqlite3'}"
    )
    with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, public) as twilio, ExitStack() as stack:
        shared = {
            "PUBLIC_BASE_URL": public,
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "TWILIO_API_BASE_URL": twilio.rest_base_url,
            "ENGINE": "openai",
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": openai.base_url,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            **(env or {}),
        }
        # One after another: the first one's start-up creates the schema.
        bridges = [stack.enter_context(run_bridge(free_port(), shared, log_dir)) for _ in range(n)]
        yield Cluster(bridges, twilio, database_url)
