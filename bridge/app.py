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

from bridge.calls.control import CallControl
from bridge.calls.events import EventHub
from bridge.engines import registry as engines
from bridge.engines.contract import Engine
from bridge.engines.registry import settings_from_env
from bridge.ops.logs import configure_logging
from bridge.ops.metrics import Metrics
from bridge.settings.env import Settings
from bridge.telephony.media_wire import MAX_MESSAGE_BYTES
from bridge.telephony.rest import TwilioRest
from bridge.telephony.routes import MEDIA_PATH
from bridge.telephony.signatures import SignatureChecker
from bridge.telephony.stream_socket import NoReaderThread
from bridge.web.media_stream import MediaStreamHandler
from bridge.web.webhooks import MAX_FORM_BYTES, bp, check_signatures

log = logging.getLogger(__name__)
_controls: weakref.WeakSet[CallControl] = weakref.WeakSet()


def build_engine(settings: Settings, metrics: Metrics) -> Engine:
    return engines.build(settings, metrics)


def build_control(settings: Settings, metrics: Metrics, hub: EventHub) -> CallControl:
    """One process's call control; with REDIS_URL, one instance of several, its calls in a
    shared book (bridge/cluster/book.py)."""
    rest, engine = TwilioRest(settings), build_engine(settings, metrics)
    if settings.redis_url is None:
        return CallControl(settings, rest, engine, metrics, hub)
    import redis

    from bridge.cluster.book import RedisCallBook

    # The socket timeout outlasts the longest blocking read (the readers block 0.5 s).
    client = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30
    )
    book = RedisCallBook(client, metrics)
    control = CallControl(settings, rest, engine, metrics, hub, book=book)
    control.start()
    return control


def create_app(settings: Settings | None = None) -> Flask:
    """Build the bridge. Settings come from the environment unless given (tests)."""
    settings = settings if settings is not None else settings_from_env()
    configure_logging(
        settings.log_level,
        settings.log_format,
        secrets=settings.secret_values(),
        log_speech=settings.log_speech,
    )
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
        # (bridge/telephony/stream_socket.py).
        "thread_class": NoReaderThread,
    }
    app.extensions["bridge.settings.env"] = settings
    app.extensions["bridge.calls.control"] = control
    app.extensions["bridge.hub"] = hub
    app.extensions["bridge.ops.metrics"] = metrics
    app.extensions["bridge.telephony.signatures"] = SignatureChecker(settings)
    app.before_request(check_signatures)
    app.register_blueprint(bp)

    # -- call records and the admin API (bridge.records.store, bridge.web.live, bridge.web.api)
    # The schema is created or upgraded now, before any call. A database that cannot be
    # reached does not stop the bridge taking calls: the store's writer retries, and events
    # wait in its bounded queue. The writer and the live view each read the hub from their
    # own thread, so a call only ever appends to their queues, never waits on a database.
    from bridge.records.store import CallStore
    from bridge.web import sessions as console_sessions
    from bridge.web.api import bp as api_bp
    from bridge.web.console import bp as console_bp
    from bridge.web.live import LiveCalls

    store = CallStore(settings.database_url)
    store.try_migrate()
    # An open record older than the longest possible call was left by a process that died.
    store.start(hub, orphan_after_s=settings.max_call_s + 60)
    if settings.retention_days is not None:
        # Every instance runs it: the deletes are idempotent, and no instance is special.
        store.start_retention(settings.retention_days)
    live = LiveCalls(hub, stale_after_s=settings.max_call_s + 60)
    live.start()
    app.extensions["bridge.records.store"] = store
    app.extensions["bridge.web.live"] = live
    if settings.redis_url is not None:
        from bridge.cluster.book import RedisCallBook

        if isinstance(control.book, RedisCallBook):
            # Whether a call is in progress anywhere: the API answers for the whole cluster.
            app.extensions["bridge.shared_calls"] = control.book
    # Console sessions; with several instances their logouts are shared through Redis.
    revocations_redis = None
    if settings.redis_url is not None and settings.admin_token is not None:
        import redis

        revocations_redis = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=2
        )
    console_sessions.install(app.extensions, settings.admin_token, revocations_redis)
    app.register_blueprint(api_bp)
    app.register_blueprint(console_bp)  # /console: the live console page (bridge/web/console.py)

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
    runs once every call has ended (gunicorn's own exit), from a background thread."""
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
    from bridge.records.store import close_all

    close_all(max(1.0, deadline - time.monotonic()))
