"""``python -m bridge.sim.demo`` (``make demo``): the whole product on one machine, offline.

Starts the bridge from the Procfile's ``web:`` line (as ``make run`` does) on a free port,
with throwaway Twilio credentials, an ``ADMIN_TOKEN`` and a call store inside the output
folder; ``ENGINE=relay`` unless ``OPENAI_API_KEY`` is set (then the real engine translates).
The bridge sends its REST requests to the simulator, which then places one call with the
speech in ``demo/audio``. Everything lands in ``out/demo-<timestamp>/``: what each party heard,
the transcript, the report and the bridge's log.

Concurrency: the bridge is a child process in its own process group, listening on 127.0.0.1
only (stopped with SIGTERM, as a platform stops it, then SIGKILL to the group if it hangs); the
simulator runs in this process. Ctrl-C (or SIGTERM, SIGHUP) stops the bridge within a few
seconds, removes the half-written output folder and says so in one line (exit status 130).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import requests

from bridge.sim.__main__ import default_out_dir
from bridge.sim.session import SimOptions, Simulator
from bridge.sim.wav import DEMO_AGENT_WAV, DEMO_CALLER_WAV

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
# After Ctrl-C: how long the bridge may take to stop by itself before it is killed.
INTERRUPT_GRACE_S = 5.0
# Throwaway credentials: nothing here talks to Twilio, the simulator plays it.
DEMO_ACCOUNT_SID = "AC" + "0" * 32
DEMO_AGENT_NUMBER = "+15557654321"


class DemoError(RuntimeError):
    """The bridge did not start; the message says why (its log is in the output folder)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def procfile_web_command() -> str:
    """The Procfile's ``web:`` command: the demo runs the bridge exactly as deployed."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return line.removeprefix("web:").strip()
    raise DemoError("Procfile has no web: line")


def bridge_environment(
    port: int, rest_base_url: str, out_dir: Path, auth_token: str, admin_token: str
) -> dict[str, str]:
    """The bridge's settings for the demo: only what the machine's environment cannot give."""
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108 (only if HOME is unset)
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "TWILIO_ACCOUNT_SID": DEMO_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": auth_token,
        "TWILIO_API_BASE_URL": rest_base_url,
        "AGENT_NUMBER": DEMO_AGENT_NUMBER,
        "ADMIN_TOKEN": admin_token,
        "DATABASE_URL": f"sqlite:///{(out_dir / 'calls.sqlite3').resolve()}",
        "BRIDGE_THREADS": "32",
        # Stopped mid-call (Ctrl-C), the demo's bridge ends its call at once: nobody real is
        # on it. Stopped after the call, as normally, there is nothing to drain anyway.
        "SHUTDOWN_GRACE_SECONDS": "0",
    }
    key = os.environ.get("OPENAI_API_KEY")
    if key:
        env.update({"ENGINE": "openai", "OPENAI_API_KEY": key})
        if os.environ.get("OPENAI_BASE_URL"):
            env["OPENAI_BASE_URL"] = os.environ["OPENAI_BASE_URL"]
    else:
        env["ENGINE"] = "relay"
    return env


@contextmanager
def running_bridge(env: Mapping[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The bridge under gunicorn until the block ends; healthy (``/healthz``) on entry.

    It listens on 127.0.0.1 only: it runs with throwaway or test credentials and everything
    that calls it is on this machine. It runs in its own process group, so a Ctrl-C at the
    terminal reaches only this process, which then stops the bridge itself, workers included.
    """
    # The process's own port, not PUBLIC_BASE_URL: behind a balancer (several instances)
    # the public URL is the balancer's, not this process's.
    url = f"http://127.0.0.1:{env['PORT']}"
    # gunicorn applies GUNICORN_CMD_ARGS over the config file's 0.0.0.0 (a deployment's
    # setting), so the Procfile's command itself runs unchanged.
    env = {**env, "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{env['PORT']}"}
    proc: subprocess.Popen[bytes] | None = None
    stop_within_s = STOP_TIMEOUT_S
    try:
        with log_path.open("wb") as log_file:
            # Every setting the demo depends on is given here, and real variables win over a
            # .env in the checkout, so one left there cannot point the demo at a real account.
            proc = subprocess.Popen(  # noqa: S603 (our own Procfile command, no user input)
                ["/bin/sh", "-c", f"exec {procfile_web_command()}"],
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        _wait_healthy(proc, url, log_path)
        yield proc
    except KeyboardInterrupt:
        stop_within_s = INTERRUPT_GRACE_S  # someone is waiting: no drain, no long wait
        raise
    finally:
        if proc is not None:
            stop_bridge(proc, stop_within_s)


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise DemoError(f"the bridge exited at start (see {log_path})")
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise DemoError(f"the bridge did not become healthy (see {log_path})")
        time.sleep(0.2)


def stop_bridge(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM (as a platform stops it), then after ``grace_s`` SIGKILL to its whole process
    group, so no worker outlives its master. Idempotent; a second Ctrl-C while waiting only
    makes the kill come sooner."""
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    finally:
        # Only while the master is unreaped: its pid, the group's id, cannot be reused yet.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_demo(out_dir: Path, out: TextIO) -> int:
    """Start the bridge, place one simulated call, stop the bridge; 0 when the call worked."""
    out_dir.mkdir(parents=True, exist_ok=True)
    auth_token, admin_token = secrets.token_hex(16), secrets.token_urlsafe(24)
    port = free_port()
    options = SimOptions(
        bridge_url=f"http://127.0.0.1:{port}",
        account_sid=DEMO_ACCOUNT_SID,
        auth_token=auth_token,
        caller_wav=DEMO_CALLER_WAV,
        agent_wav=DEMO_AGENT_WAV,
        out_dir=out_dir,
        admin_token=admin_token,
    )
    with Simulator(options, out) as simulator:
        env = bridge_environment(port, simulator.rest_base_url, out_dir, auth_token, admin_token)
        engine = env["ENGINE"]
        why = "OPENAI_API_KEY is set" if engine == "openai" else "no OPENAI_API_KEY"
        out.write(f"Starting the bridge on {options.bridge_url} (ENGINE={engine}: {why}) …\n")
        try:
            with running_bridge(env, out_dir / "bridge.log"):
                report = simulator.run_call()
                out.write("Stopping the bridge …\n")
        except DemoError as exc:
            out.write(f"demo: {exc}\n")
            return 1
    out.write("\n" + report.to_text())
    out.write(f"\nEverything is in {out_dir}/\n")
    for name in ("caller_heard.wav", "agent_heard.wav", "transcript.txt", "report.txt"):
        out.write(f"  {out_dir / name}\n")
    out.write(f"  {out_dir / 'report.json'}\n  {out_dir / 'bridge.log'}\n")
    return 0 if report.ok else 1


def main() -> int:
    out_dir = default_out_dir("demo")
    fresh = not out_dir.exists()
    # A closed terminal or a supervisor's SIGTERM stops the demo as Ctrl-C does, tidily.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)
    try:
        return run_demo(out_dir, sys.stdout)
    except KeyboardInterrupt:
        # The bridge is stopped by now (running_bridge); the folder holds half a call. A second
        # Ctrl-C would only interrupt the tidying with a traceback.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        if fresh:
            shutil.rmtree(out_dir, ignore_errors=True)
            left = f"{out_dir}/ removed"
        else:
            left = f"{out_dir}/ is incomplete"
        sys.stdout.write(f"\nInterrupted: the bridge is stopped and {left}.\n")
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
