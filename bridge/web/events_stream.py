"""Server-sent events of one call, for the console's live view.

Under gunicorn's gthread worker an event stream holds a request thread for as long as it is
open, so streams are bounded: at most ``MAX_STREAMS`` at once (more get 503), each with its
own bounded watcher queue (bridge/web/live.py) released when the client goes. The generator
wakes at least every ``POLL_S`` to notice the bridge stopping or (under gunicorn) the
client having closed its socket, writes a comment heartbeat after ``HEARTBEAT_S`` of quiet
(through a proxy, the failed write is how a vanished client is noticed), and returns once
the call has ended.

Wire format: ``event: <name>`` and one ``data:`` line of JSON per event, a blank line after.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from flask import Response

from bridge.calls.events import (
    AgentAnswered,
    AgentDialled,
    CallEnded,
    DelayMeasured,
    SegmentClosed,
    TextFragment,
)
from bridge.records.views import CallDetail, Segment
from bridge.web.live import LiveCalls, Watch, WatchItem

MAX_STREAMS = 20
HEARTBEAT_S = 15.0
POLL_S = 1.0


class StreamSlots:
    """A count of open event streams, bounded at ``limit``."""

    def __init__(self, limit: int = MAX_STREAMS) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self.open = 0

    def acquire(self) -> bool:
        with self._lock:
            if self.open >= self.limit:
                return False
            self.open += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.open = max(0, self.open - 1)


def sse(name: str, data: Mapping[str, Any]) -> str:
    """One server-sent event; JSON never contains a raw newline, so one data line suffices."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def sse_of(item: WatchItem) -> str | None:
    """The event a watcher item becomes on the wire, or None for nothing to send."""
    e = item.event
    if isinstance(e, TextFragment):
        fragment = {"direction": e.direction, "kind": e.kind, "text": e.text}
        return sse("fragment", {**fragment, "offset_ms": e.offset_ms})
    if isinstance(e, SegmentClosed):
        segment = Segment(
            e.direction, e.seq, e.source_text, e.translated_text, e.start_ms, e.end_ms, e.delay_ms
        )
        return sse("segment", segment.to_json())
    if isinstance(e, DelayMeasured):
        return sse("delay", {"direction": e.direction, "delay_ms": e.delay_ms})
    if isinstance(e, AgentDialled | AgentAnswered):
        return sse("summary", item.summary.to_json())
    if isinstance(e, CallEnded):
        return sse("ended", {"reason": e.reason})
    return None


def client_gone(sock: socket.socket | None) -> bool:
    """Has the client closed its end? An event-stream client sends nothing after its request,
    so a readable socket that reads as end-of-file means it went away. Lets an idle stream
    free its thread now rather than at the next heartbeat's failed write."""
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):  # closed already, or TLS (no peeking): heartbeats will tell
        return False


class _Cleanup:
    """Runs once, from whichever comes first: the generator ending or the response closing
    (a generator closed before its first step never runs its ``finally``)."""

    def __init__(self, watch: Watch | None, slots: StreamSlots) -> None:
        self._watch = watch
        self._slots = slots
        self._lock = threading.Lock()
        self._done = False

    def __call__(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        if self._watch is not None:
            self._watch.close()
        self._slots.release()


def _events(
    watch: Watch | None,
    ended: CallDetail | None,
    *,
    live: LiveCalls,
    heartbeat_s: float,
    cleanup: Callable[[], None],
    sock: socket.socket | None,
) -> Iterator[str]:
    try:
        if watch is None:
            assert ended is not None
            yield sse("snapshot", ended.to_json())
            yield sse("ended", {"reason": ended.summary.end_reason or "unknown"})
            return
        yield sse("snapshot", watch.snapshot.to_json())
        if watch.snapshot.summary.ended_at is not None:
            yield sse("ended", {"reason": watch.snapshot.summary.end_reason or "unknown"})
            return
        quiet_since = time.monotonic()
        while not live.closed:
            item = watch.get(timeout=min(POLL_S, heartbeat_s))
            if item is None:
                if client_gone(sock):
                    return
                if time.monotonic() - quiet_since >= heartbeat_s:
                    yield ": heartbeat\n\n"
                    quiet_since = time.monotonic()
                continue
            text = sse_of(item)
            if text is not None:
                yield text
                quiet_since = time.monotonic()
            if isinstance(item.event, CallEnded):
                return
    finally:
        cleanup()


# A call followed from elsewhere than the live view (bridge/web/api_shared.py): given "should
# it stop now" and the heartbeat period, the stream's text.
Follow = Callable[[Callable[[], bool], float], Iterator[str]]


def _followed(
    follow: Follow, stopped: Callable[[], bool], heartbeat_s: float, cleanup: Callable[[], None]
) -> Iterator[str]:
    try:
        yield from follow(stopped, heartbeat_s)
    finally:
        cleanup()


def event_stream(
    watch: Watch | None,
    ended: CallDetail | None,
    *,
    live: LiveCalls,
    slots: StreamSlots,
    config: Mapping[str, Any],
    environ: Mapping[str, Any],
    follow: Follow | None = None,
) -> Response:
    """The streaming response; the caller has taken a slot of ``slots`` already. From
    ``follow`` when given (a call in progress on other instances), else from the live view."""
    cleanup = _Cleanup(watch, slots)
    heartbeat_s = float(config.get("BRIDGE_SSE_HEARTBEAT_S", HEARTBEAT_S))
    # gunicorn hands the client's socket over; other servers (the test client) do not.
    sock = environ.get("gunicorn.socket")
    sock = sock if isinstance(sock, socket.socket) else None
    if follow is not None:

        def stopped() -> bool:
            return live.closed or client_gone(sock)

        body = _followed(follow, stopped, heartbeat_s, cleanup)
    else:
        body = _events(watch, ended, live=live, heartbeat_s=heartbeat_s, cleanup=cleanup, sock=sock)
    response = Response(body, mimetype="text/event-stream")
    response.call_on_close(cleanup)
    # A reverse proxy must pass each event on as it comes, not buffer the stream.
    response.headers["X-Accel-Buffering"] = "no"
    return response
