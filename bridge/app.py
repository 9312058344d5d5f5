"""The Flask app factory. gunicorn runs ``bridge.app:create_app()`` (see Procfile)."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from flask import Flask
from flask_sock import Sock

from bridge import engines
from bridge.control import MEDIA_PATH, CallControl
from bridge.engine import Engine
from bridge.events import EventHub
from bridge.inline_ws import NoReaderThread
from bridge.logs import configure_logging
from bridge.media_stream import MediaStreamHandler
from bridge.metrics import Metrics
from bridge.settings import Settings
from bridge.signatures import SignatureChecker
from bridge.twilio_media import MAX_MESSAGE_BYTES
from bridge.twilio_rest import TwilioRest
from bridge.webhooks import MAX_FORM_BYTES, bp, check_signatures

log = logging.getLogger(__name__)
_controls: weakref.WeakSet[CallControl] = weakref.WeakSet()
# SIGTERM's handler acts once per process: a second SIGTERM (a platform that signals every
# process, then gunicorn's master forwarding its own) runs inside the first one's handler, in
# the same thread, where waiting for a lock the first holds would deadlock. Never released.
_sigterm_claim = threading.Lock()


def build_engine(settings: Settings, metrics: Metrics) -> Engine:
    return engines.build(settings, metrics)


def build_control(settings: Settings, metrics: Metrics, hub: EventHub) -> CallControl:
    """One process's call control; with REDIS_URL, one instance of several (bridge/cluster.py)."""
    rest, engine = TwilioRest(settings), build_engine(settings, metrics)
    if settings.redis_url is None:
        return CallControl(settings, rest, engine, metrics, hub)
    import redis

    from bridge.cluster import ClusterCallControl

    # The socket timeout outlasts the longest blocking read (the readers block 0.5 s).
    client = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30
    )
    control = ClusterCallControl(settings, rest, engine, metrics, hub, client=client)
    control.start()
    return control


def create_app(settings: Settings | None = None) -> Flask:
    """Build the bridge. Settings come from the environment unless given (tests)."""
    settings = settings if settings is not None else Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    metrics = Metrics()
    hub = EventHub()  # call events for the store and the live console
    control = build_control(settings, metrics, hub)
    _controls.add(control)

    app = Flask(__name__)
    # Werkzeug enforces this while reading, so a chunked body (no Content-Length) is bounded too.
    app.config["MAX_CONTENT_LENGTH"] = MAX_FORM_BYTES
    app.config["MAX_FORM_MEMORY_SIZE"] = MAX_FORM_BYTES
    app.config["SOCK_SERVER_OPTIONS"] = {
        # Twilio's frames are small; a bound keeps a rogue peer from making us buffer megabytes.
        "max_message_size": MAX_MESSAGE_BYTES,
        # No pings: Twilio streams a frame every 20 ms, which proves liveness, and its Media
        # Streams docs promise nothing about answering pings (a missed pong would drop a call).
        "ping_interval": None,
        # The request thread reads its socket itself: no reader thread per Media Stream
        # (bridge/inline_ws.py).
        "thread_class": NoReaderThread,
    }
    app.extensions["bridge.settings"] = settings
    app.extensions["bridge.control"] = control
    app.extensions["bridge.hub"] = hub
    app.extensions["bridge.metrics"] = metrics
    app.extensions["bridge.signatures"] = SignatureChecker(settings)
    app.before_request(check_signatures)
    app.register_blueprint(bp)

    # -- call records and the admin API (bridge/store.py, bridge/live.py, bridge/api.py) ----
    # The schema is created or upgraded now, before any call. A database that cannot be
    # reached does not stop the bridge taking calls: the store's writer retries, and events
    # wait in its bounded queue. The writer and the live view each read the hub from their
    # own thread, so a call only ever appends to their queues, never waits on a database.
    from bridge.api import bp as api_bp
    from bridge.console import bp as console_bp
    from bridge.live import LiveCalls
    from bridge.store import CallStore

    store = CallStore(settings.database_url)
    store.try_migrate()
    # An open record older than the longest possible call was left by a process that died.
    store.start(hub, orphan_after_s=settings.max_call_s + 60)
    live = LiveCalls(hub, stale_after_s=settings.max_call_s + 60)
    live.start()
    app.extensions["bridge.store"] = store
    app.extensions["bridge.live"] = live
    if settings.redis_url is not None:
        from bridge.cluster import ClusterCallControl

        if isinstance(control, ClusterCallControl):
            # Whether a call is in progress anywhere: the API answers for the whole cluster.
            app.extensions["bridge.shared_calls"] = control
    app.register_blueprint(api_bp)
    app.register_blueprint(console_bp)  # /console: the live console page (bridge/console.py)

    sock = Sock(app)

    @sock.route(MEDIA_PATH)  # type: ignore[untyped-decorator]
    def media(ws: Any) -> None:
        MediaStreamHandler(ws, control, metrics).run()

    log.info(
        "bridge ready: engine=%s public=%s languages caller=%s agent=%s",
        settings.engine,
        settings.public_base_url,
        settings.caller_language,
        settings.agent_language,
    )
    return app


def begin_shutdown(then: Callable[[], None] | None = None) -> None:
    """SIGTERM: stop taking calls (the voice webhook answers 503) while still serving live
    calls' streams and callbacks; after the grace period the rest end with a notice. ``then``
    runs once every call has ended (gunicorn's own exit), from a background thread. Only the
    first call acts (see ``_sigterm_claim``)."""
    if not _sigterm_claim.acquire(blocking=False):
        return
    controls = list(_controls)
    for control in controls:
        control.begin_shutdown()

    def wait_then() -> None:
        for control in controls:
            control.finish_shutdown(timeout=control.drain_timeout)
        if then is not None:
            then()

    threading.Thread(target=wait_then, name="shutdown", daemon=True).start()


def finish_shutdown(timeout: float) -> None:
    """Wait (at most ``timeout``) until every call of every app in this process has ended,
    then close the call stores (their queued writes done)."""
    deadline = time.monotonic() + timeout
    for control in list(_controls):
        control.finish_shutdown(max(0.0, deadline - time.monotonic()))
    # Every call has ended and published its end: write what is queued, and close as
    # "shutdown" any record still open, so no record outlives the process unfinished.
    from bridge.store import close_all

    close_all(max(1.0, deadline - time.monotonic()))
