"""What the OpenAI links share: one SDK WebSocket connection, its reader thread, reconnects.

A link (:class:`~bridge.engines.openai.translate_link.TranslationLink`,
:class:`~bridge.engines.openai.voice_link.RealtimeLink`) is owned by one
:class:`~bridge.engines.upstream.UpstreamSession`. The socket has one writer at a time: every
message we send holds the link's write lock (the owner's writer thread appends audio; the reader
thread may send the few control events a server event calls for). The reader iterates the SDK's
typed server events and dispatches them through a table of ``_on_<event>`` handlers the subclass
provides; unknown events are logged at debug.

Transient drops (close 1001/1006/1011/...) are retried by the SDK (``on_reconnecting``, backoff).
A reconnect opens a *fresh* server session with default settings, so when its ``session.created``
arrives the link asks to be configured again before any more audio is sent; while the SDK is
reconnecting the link reports itself down, so the owner holds the speaker's audio instead of
letting it reach the new session unconfigured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, NotRequired, Protocol, TypedDict, TypeVar

from openai.types.websocket_reconnection import ReconnectingEvent, ReconnectingOverrides

from bridge.engines.contract import EngineUnavailable, SessionListener, SessionSpec
from bridge.engines.upstream import LinkState
from bridge.ops.logs import CallLogger

# Bound on one server message: a delta of a few seconds of 24 kHz PCM16 in base64 is < 1 MiB.
MAX_SERVER_MESSAGE_BYTES = 4 * 1024 * 1024
# The SDK queues what is sent while it reconnects; we hold audio ourselves, so keep it small.
SDK_QUEUE_BYTES = 256 * 1024
# The SDK's own retries for a dropped socket: ~0.25, 0.5, 1, 2, 2 s apart (with jitter), so the
# first attempt comes within a quarter second of the drop.
RECONNECT_ATTEMPTS = 5
RECONNECT_FIRST_DELAY_S = 0.25
RECONNECT_MAX_DELAY_S = 2.0
# Keyword arguments for the SDK's ``connect()`` of either endpoint.
CONNECT_OPTIONS: dict[str, Any] = {
    "max_retries": RECONNECT_ATTEMPTS,
    "initial_delay": RECONNECT_FIRST_DELAY_S,
    "max_delay": RECONNECT_MAX_DELAY_S,
    "max_queue_size": SDK_QUEUE_BYTES,
    "websocket_connection_options": {"max_size": MAX_SERVER_MESSAGE_BYTES, "compression": None},
}


class LinkArgs(TypedDict):
    """What every link is made with (:class:`OpenAILink`'s keyword arguments)."""

    spec: SessionSpec
    listener: SessionListener
    on_change: Callable[[], None]
    log: CallLogger
    name: str
    count: NotRequired[Callable[[str], None] | None]


class Connection(Protocol):
    """The part of the SDK's sync connections (translation, realtime) a link relies on."""

    def __iter__(self) -> Iterator[Any]: ...

    def close(self) -> None: ...


class Manager(Protocol):
    def enter(self) -> Any: ...


C = TypeVar("C", bound=Connection)


class OpenAILink(Generic[C]):
    """One OpenAI WebSocket session. Subclasses set ``_handlers`` and implement
    :meth:`_connect`, :meth:`_configure`, :meth:`send` and :meth:`finish`."""

    kind = "openai"  # named in log lines and errors

    def __init__(
        self,
        *,
        spec: SessionSpec,
        listener: SessionListener,
        on_change: Callable[[], None],
        log: CallLogger,
        name: str,
        count: Callable[[str], None] | None = None,
    ) -> None:
        self._count = count or (lambda event: None)
        self._spec = spec
        self._listener = listener
        self._on_change = on_change
        self._log = log
        self.name = name
        self.state = LinkState.OPENING
        self.dead_reason = ""
        self.opened_at = 0.0
        self.expires_at: float | None = None  # monotonic time the server will end the session
        self._lock = threading.Lock()  # guards state and the flags below
        self._write_lock = threading.Lock()  # one writer at a time on the socket
        self._conn: C | None = None
        self._reader: threading.Thread | None = None
        self._created = 0
        self._needs_config = False
        self._handlers: dict[str, Callable[[Any], None]] = {}

    # -- for subclasses ---------------------------------------------------------------------

    def _connect(self) -> Manager:
        """The SDK's connection manager for this endpoint (not yet entered)."""
        raise NotImplementedError

    def _configure(self, conn: C) -> None:
        """Send the session configuration (called with the write lock held)."""
        raise NotImplementedError

    def _on_fresh_session(self) -> None:
        """The SDK reconnected into a new server session: forget per-session state."""

    # -- the owner's writer thread ----------------------------------------------------------

    def open(self) -> None:
        """Connect and configure; raises :class:`EngineUnavailable` if that is impossible."""
        started = time.monotonic()
        try:
            conn: C = self._connect().enter()
        except Exception as exc:  # any failure to open means "unavailable"
            self.state = LinkState.DEAD
            raise EngineUnavailable(f"{self.kind} session could not open: {describe(exc)}") from exc
        self._conn = conn
        self.opened_at = time.monotonic()
        with self._write_lock:
            self._configure(conn)
        self.state = LinkState.UP
        self._log.info(
            "%s session %s open in %.0f ms (output %s)",
            self.kind,
            self.name,
            1000 * (self.opened_at - started),
            self._spec.output_language,
        )
        self._reader = threading.Thread(
            target=self._run_reader, args=(conn,), name=f"engine-reader:{self.name}", daemon=True
        )
        self._reader.start()

    def _write(self, send: Callable[[C], None]) -> bool:
        """Send one message (configuring first after a reconnect); False if the socket failed."""
        conn = self._conn
        if conn is None:
            return False
        try:
            with self._write_lock:
                with self._lock:
                    needs_config, self._needs_config = self._needs_config, False
                if needs_config:
                    self._configure(conn)
                send(conn)
        except Exception as exc:  # noqa: BLE001 - the socket dropped; the reader tells how
            self._log.info("%s send failed (%s); holding audio", self.kind, describe(exc))
            with self._lock:
                if self.state is LinkState.UP:
                    self.state = LinkState.RECONNECTING
            return False
        return True

    def join(self, timeout: float) -> None:
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout)
        if reader is not None and reader.is_alive():
            self._close_socket()  # the server did not finish in time: stop waiting for it
            reader.join(1.0)

    @property
    def alive(self) -> bool:
        reader = self._reader
        return reader is not None and reader.is_alive()

    # -- reader thread ----------------------------------------------------------------------

    def _run_reader(self, conn: C) -> None:
        reason = f"the {self.kind} server ended the session"
        try:
            for event in conn:
                self._dispatch(event)
                if self._ended(event):
                    break
        except Exception as exc:  # noqa: BLE001 - thread boundary: the SDK gave up
            reason = f"{self.kind} socket lost: {describe(exc)}"
        finally:
            self._close_socket()
            with self._lock:
                finishing = self.state in (LinkState.FINISHING, LinkState.CLOSED)
                self.state = LinkState.CLOSED if finishing else LinkState.DEAD
                self.dead_reason = "" if finishing else reason
            if not finishing:
                self._log.warning("%s session %s lost: %s", self.kind, self.name, reason)
            self._on_change()

    def _ended(self, event: Any) -> bool:
        """Whether ``event`` is the server's last (translation: ``session.closed``)."""
        return False

    def _dispatch(self, event: Any) -> None:
        handler = self._handlers.get(event.type)
        if handler is None:
            self._log.debug("ignoring server event %s", event.type)
            return
        handler(event)

    def _on_session_created(self, event: Any) -> None:
        self._created += 1
        expires = getattr(event.session, "expires_at", None)
        if isinstance(expires, int | float) and expires > 0:
            self.expires_at = time.monotonic() + max(0.0, float(expires) - time.time())
        if self._created > 1:
            self._count("reconnected")
            self._log.info(
                "%s session %s back after reconnect; re-configuring", self.kind, self.name
            )
            self._on_fresh_session()
            with self._lock:
                self._needs_config = True
                if self.state is LinkState.RECONNECTING:
                    self.state = LinkState.UP
            self._on_change()

    def _on_error(self, event: Any) -> None:
        err = event.error
        # Most errors leave the session open (OpenAI's docs): log them and carry on.
        self._log.warning(
            "%s server error type=%s code=%s: %s", self.kind, err.type, err.code, err.message
        )

    def _on_reconnecting(self, event: ReconnectingEvent) -> ReconnectingOverrides | None:
        with self._lock:
            if self.state in (LinkState.FINISHING, LinkState.CLOSED):
                return {"abort": True}
            self.state = LinkState.RECONNECTING
        self._log.warning(
            "%s socket dropped (close %s); reconnect %d/%d in %.2fs",
            self.kind,
            event.close_code,
            event.attempt,
            event.max_attempts,
            event.delay,
        )
        self._on_change()
        return None

    def _close_socket(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - closing a broken socket may raise; nothing to do
            self._log.debug("closing %s socket raised", self.kind, exc_info=True)


def describe(exc: BaseException) -> str:
    """A one-line cause without secrets (no headers, no URLs with keys)."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:
        return f"HTTP {status} from OpenAI"
    return f"{type(exc).__name__}: {exc}"
