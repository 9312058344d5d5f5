"""``make demo`` (``python -m bridge.sim.demo``) run as a user runs it, in a subprocess: what it
listens on, and what Ctrl-C in the middle of its call leaves behind.

The whole demo run is in ``tests/test_sim.py``; this file stops one half-way.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Generous for a loaded 2-core machine; before the fix Ctrl-C took 30 s (a drain, then a kill).
INTERRUPT_BOUND_S = 20.0
START_BOUND_S = 90.0


def processes_with(marker: bytes) -> list[int]:
    """Live processes whose environment holds ``marker`` (this user's: others are unreadable)."""
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with suppress(OSError):
            if marker in environ.read_bytes().split(b"\0"):
                pids.append(int(environ.parent.name))
    return pids


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


class Demo:
    """The demo in its own session (so its Ctrl-C is sent like a terminal's, to its group),
    its merged stdout and stderr read line by line on a thread."""

    def __init__(self, cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TWILIO_"))}
        env["PYTHONPATH"] = str(ROOT)
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "bridge.sim.demo"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, name="demo-output", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for_line(self, pattern: str, timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.output.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no line matched {pattern!r}:\n{''.join(self.output)}")

    def rest(self) -> str:
        """Everything it printed after the lines already read (call once it has exited)."""
        while (line := self.lines.get(timeout=10)) is not None:
            self.output.append(line)
        return "".join(self.output)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    running = Demo(tmp_path)
    yield running
    with suppress(ProcessLookupError):
        os.killpg(running.proc.pid, signal.SIGKILL)  # a demo that hung: not left behind
    running.proc.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_ctrl_c_mid_call_stops_the_loopback_bridge_promptly_and_removes_the_folder(
    demo: Demo, tmp_path: Path
) -> None:
    started = demo.wait_for_line(r"Starting the bridge on http://127\.0\.0\.1:(\d+) ", 30)
    port = int(started.group(1))
    marker = f"PUBLIC_BASE_URL=http://127.0.0.1:{port}".encode()
    try:
        demo.wait_for_line(r"both parties speaking", START_BOUND_S)
        # It says 127.0.0.1 and listens there only: another address of this host is refused
        # (127.0.0.2 is on the loopback interface too, so this needs no network).
        assert not refused("127.0.0.1", port)
        assert refused("127.0.0.2", port), "the demo's bridge listens on every interface"
        assert processes_with(marker), "the bridge is not running"

        interrupted_at = time.monotonic()
        os.killpg(demo.proc.pid, signal.SIGINT)  # what Ctrl-C at a terminal does
        try:
            code = demo.proc.wait(timeout=INTERRUPT_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {INTERRUPT_BOUND_S:.0f} s after Ctrl-C")
        took_s = time.monotonic() - interrupted_at
        output = demo.rest()

        assert code == 128 + signal.SIGINT, output
        assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
        message = output.strip().splitlines()[-1]
        assert re.fullmatch(
            r"Interrupted: the bridge is stopped and out/demo-[0-9-]+/ removed\.", message
        ), output
        assert list((tmp_path / "out").glob("demo-*")) == [], "a partial output folder is left"
        # Killed processes may linger a moment as zombies (their environment then reads empty).
        deadline = time.monotonic() + 5
        while processes_with(marker):
            assert time.monotonic() < deadline, f"bridge still running: {processes_with(marker)}"
            time.sleep(0.1)
        assert refused("127.0.0.1", port)
        print(f"\nCtrl-C to exit: {took_s:.2f} s")  # the figure for a -s run
    finally:
        for pid in processes_with(marker):  # whatever happened, no bridge outlives the test
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
