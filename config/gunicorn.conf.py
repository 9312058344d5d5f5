"""gunicorn configuration for the bridge (``gunicorn -c config/gunicorn.conf.py``).

Why it is shaped like this:

* ``workers``: a call's two legs (the caller's and the agent's Media Stream) arrive as two
  separate WebSocket requests, and its status callbacks as others; any of them may land in any
  worker process. Without ``REDIS_URL`` call state lives in one process's memory, so there is
  exactly one worker (``BRIDGE_WORKERS`` / ``WEB_CONCURRENCY`` above 1 are ignored with a
  warning). With ``REDIS_URL`` each worker is an instance of the cluster (docs/scaling.md) and
  ``BRIDGE_WORKERS`` (else ``WEB_CONCURRENCY``, else 1) sets how many: about one per CPU core,
  since a worker's audio work is bounded by its GIL (docs/scaling.md has the figures).
* ``worker_class = "gthread"`` with many threads: each Media Stream WebSocket holds one request
  thread for the whole call (flask-sock is thread-based), so a call needs two threads plus a
  few for webhooks. ``BRIDGE_THREADS`` (default 256) therefore caps concurrent calls at roughly
  half of it; audio work itself runs in the bridge's own per-call threads.
* ``timeout``: in gthread the master only checks that the worker process is alive, not how
  long one request takes, so long-lived WebSockets are fine with the default heartbeat.
* Shutdown (SIGTERM, e.g. a deploy): the voice webhook answers 503 at once, so Twilio's
  fallback URL (or another instance) takes new calls; live calls go on for
  ``SHUTDOWN_GRACE_SECONDS`` (streams and status callbacks still served), then each party
  hears a short notice and the call ends; then the worker exits (see ``post_worker_init``).
  ``graceful_timeout`` leaves room for the notice and teardown before the master would kill
  the worker.
* Settings (``.env`` included, the real environment winning) are validated here, once, before
  any worker starts, so bad settings print one clear line naming each of them and exit with
  status 2 instead of a traceback from inside a worker.
"""

import os
import signal
import sys
from types import FrameType
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bridge.engines.registry import settings_from_env
from bridge.settings.env import ConfigError, read_environment

# gunicorn reads this file before the app exists, so it reads .env itself, as the app will:
# the real environment wins over the file. BRIDGE_THREADS and BRIDGE_WORKERS are checked with
# every other setting, so any mistake is one line here, before any worker starts.
_env = read_environment()
try:
    _settings = settings_from_env(_env, env_file=None)
except ConfigError as _exc:
    sys.stderr.write(f"configuration error: {_exc}\n")
    sys.exit(2)


def _workers() -> int:
    if _settings.workers > 1 and _settings.redis_url is None:
        name = "BRIDGE_WORKERS" if _env.get("BRIDGE_WORKERS", "").strip() else "WEB_CONCURRENCY"
        sys.stderr.write(
            f"warning: {name}={_settings.workers} ignored, running 1 worker: without REDIS_URL "
            "a call's legs must meet in one process (see docs/scaling.md)\n"
        )
        return 1
    return _settings.workers


bind = f"0.0.0.0:{_settings.port}"
workers = _workers()
if _settings.redis_url is not None and _settings.database_url.startswith("sqlite"):
    # One SQLite file serves the workers of one host (WAL); hosts do not share it.
    sys.stderr.write(
        "warning: REDIS_URL with SQLite call records: fine for several workers on one host; "
        "several hosts need DATABASE_URL=postgresql://...\n"
    )
worker_class = "gthread"
threads = _settings.threads
timeout = 30
# Grace for live calls, plus time for the notice to play and teardown to finish.
graceful_timeout = _settings.shutdown_grace_s + 20
keepalive = 5
accesslog = "-"
# Twilio webhooks and upgrades are small; bound request lines and headers.
limit_request_line = 8190
limit_request_fields = 100
# gunicorn 27's control socket is one fixed path per user; the bridge does not use it, and two
# instances on one host (tests, rolling restarts) would fight over it.
control_socket_disable = True


def post_worker_init(worker: Any) -> None:
    """Put our drain in front of the worker's SIGTERM handling.

    gunicorn's own handler stops accepting connections at once, which would leave Twilio's
    webhooks for new calls hanging in the listen queue and refuse the streams of agents still
    ringing. So on SIGTERM the worker keeps serving: new calls get 503 (Twilio's fallback URL
    takes them), live calls keep their streams and status callbacks for the grace period, then
    end with a notice; only then is gunicorn's handler run and the worker exits.
    """
    from bridge.app import begin_shutdown

    gunicorn_handler = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        def exit_worker() -> None:
            if callable(gunicorn_handler):
                gunicorn_handler(signum, None)

        begin_shutdown(then=exit_worker)

    signal.signal(signal.SIGTERM, on_sigterm)


def worker_exit(server: Any, worker: Any) -> None:
    """The worker is leaving for any other reason: still end every call with a notice."""
    from bridge.app import finish_shutdown

    finish_shutdown(timeout=graceful_timeout - 2)
