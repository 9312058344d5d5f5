"""A real Redis on loopback for the tests of several instances (bridge/cluster/book.py).

``TEST_REDIS_URL`` (CI sets it: .ci/run starts one) is used as is; otherwise a throwaway
``redis-server`` is started on a free port, without persistence, and stopped afterwards.
Without either the tests skip, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from tests.bridge_process import free_port

START_TIMEOUT_S = 10.0


@contextmanager
def redis_url() -> Iterator[str]:
    """The URL of a Redis that answers PING."""
    given = os.environ.get("TEST_REDIS_URL")
    if given:
        redis.Redis.from_url(given).ping()
        yield given
        return
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (make system-deps installs it; CI runs that)")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, "redis-server exited at start"
                assert time.monotonic() < deadline, "redis-server did not answer"
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
