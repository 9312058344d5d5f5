"""A Media Stream socket: read in its request thread, written by one owner that never blocks.

Reading. simple-websocket starts one reader thread per socket: it reads, parses the frames
(wsproto) and hands every message to the request thread through a list and an Event. For a
Media Stream that is a second thread woken for every 20 ms frame, and a hand-over (Event, lock,
GIL switch) per frame: under load the largest per-frame cost after the frame's own work. The
request thread does nothing but read this socket, so it reads it itself:
``thread_class=NoReaderThread`` (in ``SOCK_SERVER_OPTIONS``) keeps the reader from starting, and
:func:`receive` does the reader's work (the same ``_handle_events``: close handshake, pings,
message size bound) in the calling thread.

Writing. simple-websocket writes with a blocking ``sock.send`` from whichever thread calls it:
the leg writer (media, marks, clears, our close) and the reading thread (pongs, the reply to a
close). A send that blocks half-way lets the other thread's frame into the middle of its own
(the kernel lets a second sender in while the first waits for room), and a peer that stops
reading blocks the writer for good, and the leg's teardown with it. :class:`StreamSocket` takes
the socket over once the handshake is done:

* the socket is non-blocking, with a bounded kernel send buffer (``SEND_BUFFER_BYTES``: the
  kernel's own default reaches megabytes, minutes of audio before a dead peer shows);
* everything simple-websocket writes lands, whole frames in order, in one outgoing buffer, under
  one lock that also guards the wsproto connection (the reader parses under it too);
* only the owner writes that buffer to the socket: the request thread until the stream is bound
  to a leg, then the leg's writer thread (the reader wakes it when it queued a pong);
* bytes the kernel will not take wait in the buffer; once they have waited ``WRITE_STALL_S``, or
  more than ``OUTGOING_CAP_BYTES`` wait, :class:`WriteStalled`: the peer is not reading, its leg
  ends and the connection is reset, so no thread ever waits for it.

No thread is added: the owner retries a backlog when it wakes (see ``bridge/calls/leg.py``).
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from simple_websocket import ConnectionClosed
from wsproto.events import TextMessage
from wsproto.utilities import LocalProtocolError

# The kernel keeps about twice this (its own bookkeeping): ~50 KB, 3 s of 20 ms media frames.
# Twilio takes ~17 KB/s, so a round trip of seconds still fits.
SEND_BUFFER_BYTES = 32 * 1024
# Bytes that found the kernel buffer full and waited this long: the peer has stopped reading.
WRITE_STALL_S = 3.0
# Or this many waiting at once (a flood of pings while not reading fills it faster).
OUTGOING_CAP_BYTES = 64 * 1024
# SO_LINGER on, 0 s: close() resets the connection and drops what the kernel still holds.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class WriteStalled(ConnectionError):
    """The peer took none of our bytes for too long (or too many wait): it is not reading."""


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


class StreamSocket:
    """The one write path of an inline-read socket (see module doc). Never blocks.

    ``send``, ``flush`` and ``close`` are for the owner; :func:`receive` feeds what it reads
    through :meth:`take_in`.
    """

    def __init__(
        self,
        ws: Any,
        *,
        stall_s: float = WRITE_STALL_S,
        cap_bytes: int = OUTGOING_CAP_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not reads_inline(ws):
            # Its reader thread would block in recv on a socket we make non-blocking.
            raise TypeError("only a socket read inline (NoReaderThread) can be taken over")
        sock: socket.socket = ws.sock
        self._ws = ws
        self._sock = sock
        self._stall_s = stall_s
        self._cap = cap_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._out = bytearray()
        self._waiting_since: float | None = None  # when bytes first found the kernel full
        self._wake_owner: Callable[[], None] | None = None  # None: the reading thread owns
        self._closed = False  # nothing more goes out
        self.stalled = False
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        sock.setblocking(False)
        ws.sock = _Intake(self, sock)

    @property
    def backlogged(self) -> bool:
        """Bytes wait for room in the kernel (read without the lock: a hint to retry)."""
        return bool(self._out)

    def hand_over(self, wake: Callable[[], None]) -> None:
        """The thread ``wake`` wakes writes from now on; woken when the reader queued bytes."""
        with self._lock:
            self._wake_owner = wake
            waiting = bool(self._out)
        if waiting:
            wake()

    def send(self, text: str) -> None:
        """Owner: one text message, written as far as the socket takes it now.

        Raises ``ConnectionClosed`` once closed, :class:`WriteStalled` past the bound, OSError
        if the connection broke.
        """
        with self._lock:
            ws = self._ws
            if not ws.connected:  # as simple-websocket's send; also once we closed
                raise ConnectionClosed(ws.close_reason, ws.close_message)
            data = ws.ws.send(TextMessage(data=text))
            if not self._out:
                # The usual case, kept short (50 frames a second per leg): straight to the
                # kernel, the buffer only for what it did not take.
                try:
                    sent = self._sock.send(data)
                except BlockingIOError:
                    sent = 0
                if sent == len(data):
                    return
                data = data[sent:]
            self._out += data
            self._flush_locked()

    def flush(self) -> bool:
        """Owner: write what waits; True when nothing is left. Raises like :meth:`send`."""
        with self._lock:
            return self._flush_locked()

    def close(self, reason: int | None = None, message: str | None = None) -> None:
        """Say goodbye with a close frame if the socket takes it now, else reset the
        connection: never waits for the peer. Idempotent; never raises."""
        with self._lock:
            if self._closed:
                return
            clean = False
            try:
                if self._ws.connected and not self.stalled:
                    self._ws.close(reason=reason, message=message)
                clean = not self.stalled and self._flush_locked()
            except (OSError, LocalProtocolError, ConnectionClosed):  # the peer may be gone
                clean = False
            self._end_locked(reset=not clean)

    def take_in(self, data: bytes) -> None:
        """Reader: parse what was read (wsproto is shared with the owner, hence the lock).
        Replies it makes (pong, the close reply) wait for the owner, woken for them."""
        with self._lock:
            self._ws.ws.receive_data(data)
            keep_going = self._ws._handle_events()
            self._ws.connected = keep_going and not self._closed
            wake = self._wake_owner if self._out else None
            if self._out and wake is None:
                try:
                    self._flush_locked()  # no leg yet: the reading thread is the owner
                except OSError:
                    self._end_locked(reset=True)
        if wake is not None:
            wake()

    def _queue(self, data: bytes) -> None:
        """simple-websocket's ``sock.send``; always called with the lock held (see _Intake)."""
        if not self._closed:
            self._out += data

    def _flush_locked(self) -> bool:
        if self._closed:
            raise ConnectionClosed(self._ws.close_reason, self._ws.close_message)
        out = self._out
        if out:
            try:
                sent = self._sock.send(out)
            except BlockingIOError:
                sent = 0
            del out[:sent]
        if not out:
            self._waiting_since = None
            return True
        now = self._clock()
        if self._waiting_since is None:
            self._waiting_since = now
        waited = now - self._waiting_since
        if waited > self._stall_s or len(out) > self._cap:
            self.stalled = True
            raise WriteStalled(f"{len(out)} bytes waited {waited:.1f} s for the peer to read")
        return False

    def _end_locked(self, *, reset: bool) -> None:
        self._closed = True
        self._ws.connected = False
        self._out.clear()
        if reset:
            with contextlib.suppress(OSError):  # already closed or reset by the peer
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
                # Wakes the reading thread at once; its finish() closes (and so resets).
                self._sock.shutdown(socket.SHUT_RDWR)

    def _close_socket(self) -> None:
        with self._lock:  # never while the owner is inside a send on this descriptor
            self._closed = True
            self._out.clear()
            self._sock.close()  # idempotent


class _Intake:
    """``ws.sock`` once taken over: simple-websocket's writes land in the outgoing buffer
    (every path that makes it write holds the StreamSocket's lock); reads, polls and the final
    close reach the real socket."""

    def __init__(self, stream: StreamSocket, sock: socket.socket) -> None:
        self.stream = stream
        self._sock = sock

    def send(self, data: bytes) -> int:
        self.stream._queue(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self.stream._close_socket()


def receive(ws: Any, timeout: float) -> str | bytes | None:
    """``ws.receive(timeout)``, reading the socket in this thread when its reader never started.

    Returns the next message, or None if none came within ``timeout``; raises
    ``ConnectionClosed`` once the connection is closed (by the peer or by our side).
    """
    if not reads_inline(ws):
        message: str | bytes | None = ws.receive(timeout=timeout)
        return message
    reader: NoReaderThread = ws.thread
    sock = ws.sock
    stream = sock.stream if isinstance(sock, _Intake) else None
    while ws.connected and not ws.input_buffer:
        # One recv may bring several messages (input_buffer); wait only when none is left.
        if reader.poller is None:
            reader.poller = select.poll()
            reader.poller.register(sock, select.POLLIN)
        if not _wait_readable(reader.poller, timeout):
            return None
        try:
            data = sock.recv(ws.receive_bytes)
            if not data:
                raise OSError("peer closed the connection")
            if stream is not None:
                stream.take_in(data)
            else:
                ws.ws.receive_data(data)
                ws.connected = ws._handle_events()
        except BlockingIOError:
            continue  # woken with nothing to read after all
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
