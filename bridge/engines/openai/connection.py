"""What the OpenAI links share: one SDK WebSocket connection, its reader thread, reconnects.

A link (:class:`~bridge.engines.openai.translate_link.TranslationLink`,
:class:`~bridge.engines.openai.voice_link.RealtimeLink`) is owned by one
:class:`~bridge.engines.upstream.UpstreamSession`. The socket has one writer at a time: every
message we send holds the link's write lock (the owner's writer thread appends audio; the reader
thread may send the few control events a server event calls for). The reader iterates the SDK's
typed server events and dispatches them through a table of ``_on_<event>`` handlers the subclass
provides; unknown events are logged at debug.

A link is up only once the server has accepted its configuration: :meth:`OpenAILink.open`
starts the reader, sends ``session.update`` (with an ``event_id`` of ours) and waits for
``session.updated``. An ``error`` naming that ``event_id``, the socket closing, or no answer in
``CONFIG_TIMEOUT_S`` makes ``open`` close the socket, end the reader and raise
:class:`EngineUnavailable`: the owner retries or reports the failure, never a link that is "up"
but translating into the wrong language, or a reader left running.

Transient drops (close 1001/1006/1011/...) are retried by the SDK (``on_reconnecting``, backoff).
A reconnect opens a *fresh* server session with default settings, so when its ``session.created``
arrives the link asks to be configured again before any more audio is sent; while the SDK is
reconnecting the link reports itself down, so the owner holds the speaker's audio instead of
letting it reach the new session unconfigured. The SDK resets its retry count on every
``session.created``, so a server that accepts each reconnect and drops it again (on every
``session.update``, or just after answering it) would be retried forever: the link gives up
after ``RECONNECT_ATTEMPTS`` reconnects in a row with no ``STABLE_S`` of configured session
between them, and a configuration rejected after a reconnect ends the link; either way the
owner sees it dead (and replaces it, or reports the failure, within its own budget).

Malformed server events (not JSON, not an object, fields of the wrong type) are logged and
skipped: one bad message never ends a session.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Generic, NotRequired, Protocol, TypedDict, TypeVar

from openai.types.websocket_reconnection import ReconnectingEvent, ReconnectingOverrides

from bridge.engines.contract import EngineUnavailable, SessionListener, SessionSpec
from bridge.engines.link import STABLE_S, LinkState
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
# How long the server has to accept a new session's configuration (``session.updated``).
CONFIG_TIMEOUT_S = 10.0
# Waiting for the reader to end after the link closed its socket (it only has to notice).
READER_EXIT_S = 2.0
# Server messages in a row that do not parse before the link gives the socket up as broken.
MAX_MALFORMED_IN_A_ROW = 100
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
        # Configuration: the event_id of the last session.update sent, whether the server
        # answered it (session.updated), why it refused it, and how steady the socket has been
        # since. Guarded by self._lock.
        self._config_event_id = ""
        self._config_answered = threading.Event()
        self._config_acked = False
        self._config_refusal = ""
        self._configured_at = 0.0  # monotonic time of the last accepted configuration
        self._quick_reconnects = 0  # reconnects in a row with no STABLE_S configured between
        self.worked = False  # stayed configured and connected for STABLE_S at some point
        self._fatal = ""  # why the link itself ended the session (read by the reader's end)

    # -- for subclasses ---------------------------------------------------------------------

    def _connect(self) -> Manager:
        """The SDK's connection manager for this endpoint (not yet entered)."""
        raise NotImplementedError

    def _configure(self, conn: C, event_id: str) -> None:
        """Send the session configuration as ``session.update`` with ``event_id`` (called with
        the write lock held)."""
        raise NotImplementedError

    def _on_fresh_session(self) -> None:
        """The SDK reconnected into a new server session: forget per-session state."""

    # -- the owner's writer thread ----------------------------------------------------------

    def open(self) -> None:
        """Connect and configure; raises :class:`EngineUnavailable` if that is impossible (and
        then leaves no socket open and no reader running)."""
        started = time.monotonic()
        try:
            conn: C = self._connect().enter()
        except Exception as exc:  # any failure to open means "unavailable"
            self.state = LinkState.DEAD
            raise EngineUnavailable(f"{self.kind} session could not open: {describe(exc)}") from exc
        self._conn = conn
        # The reader runs from here on: it is what sees the server's answer to the config.
        self._reader = threading.Thread(
            target=self._run_reader, args=(conn,), name=f"engine-reader:{self.name}", daemon=True
        )
        self._reader.start()
        try:
            with self._write_lock:
                self._send_config(conn)
        except Exception as exc:  # the socket failed while configuring: "unavailable"
            self._abandon()
            raise EngineUnavailable(
                f"{self.kind} session could not be configured: {describe(exc)}"
            ) from exc
        answered = self._config_answered.wait(CONFIG_TIMEOUT_S)
        with self._lock:
            ok = answered and self._config_acked and self.state is LinkState.OPENING
            if ok:
                self.state = LinkState.UP
            cause = self._config_refusal or self.dead_reason or "no session.updated in time"
        if not ok:
            self._abandon()
            raise EngineUnavailable(f"{self.kind} session could not be configured: {cause}")
        self.opened_at = time.monotonic()
        self._log.info(
            "%s session %s open in %.0f ms (output %s)",
            self.kind,
            self.name,
            1000 * (self.opened_at - started),
            self._spec.output_language,
        )

    def _send_config(self, conn: C) -> None:
        """``session.update`` under an event_id of ours, so the server's answer is known
        (called with the write lock held)."""
        event_id = f"cfg_{uuid.uuid4().hex[:20]}"
        with self._lock:
            self._config_event_id = event_id
        self._configure(conn, event_id)

    def _abandon(self) -> None:
        """Opening failed: close the socket and wait for the reader to end (no leak)."""
        with self._lock:
            self.state = LinkState.DEAD
        self._close_socket()
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(READER_EXIT_S)
            if reader.is_alive():
                self._log.warning("%s reader %s did not end after close", self.kind, self.name)

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
                    self._send_config(conn)
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
            self._read(conn)
        except Exception as exc:  # noqa: BLE001 - thread boundary: the SDK gave up
            reason = f"{self.kind} socket lost: {describe(exc)}"
        finally:
            self._close_socket()
            with self._lock:
                self._note_steadiness()
                finishing = self.state in (LinkState.FINISHING, LinkState.CLOSED)
                self.state = LinkState.CLOSED if finishing else LinkState.DEAD
                self.dead_reason = "" if finishing else (self._fatal or reason)
                reason = self.dead_reason
            self._config_answered.set()  # an open() waiting for the config answer: it is over
            if not finishing:
                self._log.warning("%s session %s lost: %s", self.kind, self.name, reason)
            self._on_change()

    def _read(self, conn: C) -> None:
        """Dispatch server events until the last one or the end of the socket.

        The SDK parses each message inside its iterator: a message that is not JSON raises
        out of it (the connection itself is fine), so iteration resumes on a fresh iterator.
        """
        unparsed = 0  # malformed messages in a row: a bound, should the SDK keep raising
        while True:
            try:
                for event in conn:
                    unparsed = 0
                    self._dispatch(event)
                    if self._ended(event):
                        return
                return
            except (ValueError, RecursionError) as exc:  # json.loads failed on one message
                unparsed += 1
                if unparsed > MAX_MALFORMED_IN_A_ROW:
                    raise
                self._count("malformed_event")
                self._log.warning(
                    "ignoring a %s server message that is not JSON (%s)",
                    self.kind,
                    type(exc).__name__,
                )

    def _ended(self, event: Any) -> bool:
        """Whether ``event`` is the server's last (translation: ``session.closed``)."""
        return False

    def _dispatch(self, event: Any) -> None:
        kind = getattr(event, "type", None)
        if not isinstance(kind, str):
            self._count("malformed_event")
            self._log.warning("ignoring a %s server event without a type", self.kind)
            return
        handler = self._handlers.get(kind)
        if handler is None:
            self._log.debug("ignoring server event %s", kind)
            return
        try:
            handler(event)
        except Exception:  # noqa: BLE001 - one event (wrong field types): skip it, keep reading
            self._count("malformed_event")
            self._log.exception("%s server event %s could not be handled; ignored", self.kind, kind)

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

    def _on_session_updated(self, event: Any) -> None:
        with self._lock:
            self._config_acked = True
            self._configured_at = time.monotonic()
        self._config_answered.set()

    def _note_steadiness(self) -> bool:
        """At a drop: whether the session had been configured for STABLE_S (then the link has
        worked); a reconnected session is unconfigured until it is answered again. Called with
        self._lock held."""
        steady = bool(self._configured_at) and time.monotonic() - self._configured_at >= STABLE_S
        self._configured_at = 0.0
        self.worked = self.worked or steady
        return steady

    def _on_error(self, event: Any) -> None:
        err = event.error
        # Most errors leave the session open (OpenAI's docs): log them and carry on.
        self._log.warning(
            "%s server error type=%s code=%s: %s", self.kind, err.type, err.code, err.message
        )
        refused = getattr(err, "event_id", None)
        with self._lock:
            if not refused or refused != self._config_event_id:
                return
            # The server refused our session.update: the session is not what the call needs
            # (wrong language, bad format), so it must not carry audio.
            reason = f"configuration rejected ({err.code}: {err.message})"
            opening = self.state is LinkState.OPENING
            if opening:
                self._config_refusal = reason
            else:
                self._fatal = reason
        if opening:
            self._config_answered.set()
        else:
            self._close_socket()  # the reader ends and reports the link dead, with the reason

    def _on_reconnecting(self, event: ReconnectingEvent) -> ReconnectingOverrides | None:
        with self._lock:
            if self.state in (LinkState.OPENING, LinkState.FINISHING, LinkState.CLOSED):
                return {"abort": True}  # opening: open() reports it; ending: nothing to keep
            if self.state is LinkState.DEAD or self._fatal:
                return {"abort": True}
            if self._note_steadiness():
                self._quick_reconnects = 0
            self._quick_reconnects += 1
            if self._quick_reconnects > RECONNECT_ATTEMPTS:
                # Every session since the last steady one was dropped (or refused its
                # configuration) within STABLE_S: this link will not come back by itself.
                self._fatal = "the session keeps dropping soon after it is configured"
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
