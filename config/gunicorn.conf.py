"""gunicorn configuration for the bridge (``gunicorn -c config/gunicorn.conf.py``).

Why it is shaped like this:

* ``workers = 1``: a call's two legs (the caller's and the agent's Media Stream) arrive as two
  separate WebSocket requests, and both must meet the same in-memory call state. With several
  worker processes they could land in different processes. Until call state is shared across
  processes (a later issue), one process serves everything.
* ``worker_class = "gthread"`` with many threads: each Media Stream WebSocket holds one request
  thread for the whole call (flask-sock is thread-based), so a call needs two threads plus a
  few for webhooks. ``BRIDGE_THREADS`` (default 256) therefore caps concurrent calls at roughly
  half of it; audio work itself runs in the bridge's own per-call threads.
* ``timeout``: in gthread the master only checks that the worker process is alive, not how
  long one request takes, so long-lived WebSockets are fine with the default heartbeat.
* ``graceful_timeout``: on SIGTERM the worker ends live calls cleanly (both legs hung up,
  sessions closed) before exiting; ``worker_exit`` runs that teardown.
* Settings are validated here, once, before any worker starts, so a bad setting prints one
  clear line and exits with status 2 instead of a traceback from inside a worker.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bridge.settings import ConfigError, Settings

try:
    _settings = Settings.from_env()
except ConfigError as _exc:
    sys.stderr.write(f"configuration error: {_exc}\n")
    sys.exit(2)

bind = f"0.0.0.0:{_settings.port}"
workers = 1
worker_class = "gthread"
threads = int(os.environ.get("BRIDGE_THREADS", "256"))
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = "-"
# Twilio webhooks and upgrades are small; bound request lines and headers.
limit_request_line = 8190
limit_request_fields = 100
# gunicorn 27's control socket is one fixed path per user; the bridge does not use it, and two
# instances on one host (tests, rolling restarts) would fight over it.
control_socket_disable = True


def worker_exit(server: object, worker: object) -> None:
    from bridge.app import shutdown_all

    shutdown_all(timeout=graceful_timeout - 2)
