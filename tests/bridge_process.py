"""Run the real bridge the way production does: the Procfile's ``web:`` line under gunicorn."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import requests

from bridge.sim.demo import DemoError, free_port, running_bridge

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT_SID = "AC" + "5" * 32
AUTH_TOKEN = "test-auth-token-7f3a"
OPENAI_KEY = "sk-test-key-91c2"
AGENT_NUMBER = "+15557654321"
__all__ = [
    "ACCOUNT_SID",
    "AGENT_NUMBER",
    "AUTH_TOKEN",
    "OPENAI_KEY",
    "BridgeProcess",
    "free_port",
    "run_bridge",
    "run_gunicorn_once",
]


def run_gunicorn_once(
    env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Start the Procfile's server with ``env`` and wait for it to exit (start-up failures)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "config/gunicorn.conf.py",
            "bridge.app:create_app()",
        ],
        check=False,
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class BridgeProcess:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pid(self) -> int:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        pids = [int(p) for p in children.split()]
        assert len(pids) == 1, f"expected one gunicorn worker, found {pids}"
        return pids[0]

    def worker_threads(self) -> int:
        for line in Path(f"/proc/{self.worker_pid()}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        raise AssertionError("no Threads: line")

    def threads_by_kind(self) -> dict[str, int]:
        """``bridge_threads{kind}`` from /metrics, leaving out gunicorn's request-thread pool
        (its idle threads stay for the next request by design)."""
        counts: dict[str, int] = {}
        for line in requests.get(f"{self.url}/metrics", timeout=5).text.splitlines():
            if line.startswith('bridge_threads{kind="'):
                kind = line.split('"')[1]
                if kind != "ThreadPoolExecutor":
                    counts[kind] = int(float(line.split()[-1]))
        return counts

    def metric(self, name: str, labels: str = "") -> float:
        """A sample from /metrics, e.g. ``metric("bridge_calls_ended_total", 'reason="x"')``."""
        text = requests.get(f"{self.url}/metrics", timeout=5).text
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0


@contextmanager
def run_bridge(port: int, env: Mapping[str, str], log_dir: Path) -> Iterator[BridgeProcess]:
    """Start gunicorn with the Procfile's command; stop it (SIGTERM, then SIGKILL) afterwards."""
    full_env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", "/tmp"),
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "AGENT_NUMBER": AGENT_NUMBER,
        "BRIDGE_THREADS": "64",
        **env,
    }
    # Each bridge gets its own call store in its log folder, never the checkout's data/.
    full_env.setdefault("DATABASE_URL", f"sqlite:///{log_dir / f'calls-{port}.sqlite3'}")
    log_path = log_dir / f"bridge-{port}.log"
    try:
        with running_bridge(full_env, log_path) as proc:
            yield BridgeProcess(proc, port, log_path)
    except DemoError as exc:
        raise AssertionError(f"{exc}:\n{log_path.read_text(errors='replace')}") from exc
