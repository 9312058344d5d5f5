"""Reading a Media Stream socket in its request thread, without simple-websocket's reader thread.

simple-websocket starts one reader thread per socket: it reads, parses the frames (wsproto) and
hands every message to the request thread through a list and an Event. For a Media Stream that
is a second thread woken for every 20 ms frame, and a hand-over (Event, lock, GIL switch) per
frame: under load the largest per-frame cost after the frame's own work. The request thread
does nothing but read this socket, so it reads it itself: ``thread_class=NoReaderThread`` (in
``SOCK_SERVER_OPTIONS``) keeps the reader from starting, and :func:`receive` does the reader's
work (the same ``_handle_events``: close handshake, pings, message size bound) in the calling
thread. The leg writer stays the socket's only writer of media; simple-websocket's own replies
(close, pong) are written by whichever thread reads, as before.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any

from simple_websocket import ConnectionClosed
from wsproto.utilities import LocalProtocolError


class NoReaderThread:
    """A ``thread_class`` for simple-websocket whose thread never starts (see module doc)."""

    def __init__(self, target: Callable[[], None] | None = None, **_: Any) -> None:
        self.name = "(inline reader)"
        self._target = target
        # poll, not select: select refuses descriptors above 1024, which a busy worker has.
        self.poller: select.poll | None = None

    def start(self) -> None:
        """Nothing runs: :func:`receive` reads in the caller's thread."""

    def is_alive(self) -> bool:
        return False

    def join(self, timeout: float | None = None) -> None:
        """Never started, so nothing to wait for."""


def reads_inline(ws: Any) -> bool:
    return isinstance(getattr(ws, "thread", None), NoReaderThread)


def receive(ws: Any, timeout: float) -> str | bytes | None:
    """``ws.receive(timeout)``, reading the socket in this thread when its reader never started.

    Returns the next message, or None if none came within ``timeout``; raises
    ``ConnectionClosed`` once the connection is closed (by the peer or by our side).
    """
    if not reads_inline(ws):
        message: str | bytes | None = ws.receive(timeout=timeout)
        return message
    reader: NoReaderThread = ws.thread
    while ws.connected and not ws.input_buffer:
        # One recv may bring several messages (input_buffer); wait only when none is left.
        if reader.poller is None:
            reader.poller = select.poll()
            reader.poller.register(ws.sock, select.POLLIN)
        if not _wait_readable(reader.poller, timeout):
            return None
        try:
            data = ws.sock.recv(ws.receive_bytes)
            if not data:
                raise OSError("peer closed the connection")
            ws.ws.receive_data(data)
            ws.connected = ws._handle_events()
        except (OSError, LocalProtocolError):
            ws.connected = False
    if ws.input_buffer:
        message = ws.input_buffer.pop(0)
        return message
    raise ConnectionClosed(ws.close_reason, ws.close_message)


def finish(ws: Any) -> None:
    """The stream is over: close the socket, as simple-websocket's reader does when it ends.

    Left open, the server would close it itself after the handler returns, gracefully:
    gunicorn's gthread worker then half-closes and drains the socket on its main thread
    until the peer hangs up (up to 2 s), where it accepts connections.
    """
    if not reads_inline(ws):
        return
    ws.connected = False
    ws.sock.close()  # idempotent


def _wait_readable(poller: select.poll, timeout: float) -> bool:
    # A function of its own so the bench's sampler (bench/profiling) can tell waiting from work.
    return bool(poller.poll(timeout * 1000))
