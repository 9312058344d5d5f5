"""A python-socketio sync client whose event handlers run one at a time, in arrival order.

python-socketio's threaded client starts a new thread for every message it receives
(``engineio.Client`` triggers ``message`` with ``run_async=True``), so two handlers can run at
once and the later one can finish first; its maintainer confirms there is no option to
serialise them (python-socketio issues #257, #382). Audio deltas played out of order are
garbage, so here every message goes through one :class:`SerialDispatcher` thread per connection
instead. (A user that must see ``disconnect`` after the last event submits its own handling of
it to the same dispatcher: socketio calls that handler from its read loop directly.)

Nothing here knows any vendor: any Socket.IO engine can use :func:`ordered_client`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import engineio
import socketio

log = logging.getLogger(__name__)


class SerialDispatcher:
    """Runs submitted callables one after another on one daemon thread, in order."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._lock = threading.Lock()
        self._started = False

    def submit(self, work: Callable[[], None]) -> None:
        with self._lock:
            if not self._started:
                self._started = True
                self._thread.start()
        self._queue.put(work)

    def stop(self) -> None:
        """End the thread once everything submitted so far has run."""
        self._queue.put(None)

    def join(self, timeout: float) -> None:
        if self._started and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def current(self) -> bool:
        """Whether the caller is running on the dispatcher's thread."""
        return threading.current_thread() is self._thread

    def _run(self) -> None:
        while (work := self._queue.get()) is not None:
            try:
                work()
            except Exception:  # thread boundary: one bad event must not stop the rest
                log.exception("Socket.IO event handler failed")


class _OrderedEngineIOClient(engineio.Client):
    def __init__(self, *, dispatcher: SerialDispatcher, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._dispatcher = dispatcher

    def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        # Only received messages are run asynchronously by engineio; send them to the
        # dispatcher instead of a thread each. Everything else keeps engineio's behaviour.
        if event == "message" and kwargs.get("run_async"):
            handler = self.handlers.get(event)
            if handler is not None:
                self._dispatcher.submit(lambda: handler(*args))
            return None
        return super()._trigger_event(event, *args, **kwargs)


class _OrderedSocketIOClient(socketio.Client):
    def __init__(self, *, dispatcher: SerialDispatcher, **kwargs: Any) -> None:
        self._dispatcher = dispatcher
        super().__init__(**kwargs)

    def _engineio_client_class(self) -> Callable[..., engineio.Client]:
        dispatcher = self._dispatcher

        def make(**options: Any) -> engineio.Client:
            return _OrderedEngineIOClient(dispatcher=dispatcher, **options)

        return make


def ordered_client(
    dispatcher: SerialDispatcher,
    *,
    request_timeout_s: float,
    library_logger: logging.Logger,
) -> Any:
    """A ``socketio.Client`` that never reconnects by itself (the caller owns recovery, so a
    new connection always gets a new server session) and dispatches through ``dispatcher``.

    ``library_logger`` receives python-socketio's and engineio's own lines; keep it at WARNING
    or above: at INFO they log every packet (audio included) and the connection URL.
    """
    return _OrderedSocketIOClient(
        dispatcher=dispatcher,
        reconnection=False,
        handle_sigint=False,  # never touch the process's signal handlers (gunicorn owns them)
        logger=library_logger,
        engineio_logger=library_logger,
        request_timeout=request_timeout_s,
    )
