"""One Soniox WebSocket (one real-time request) and its reader thread.

A :class:`SonioxLink` is owned by one
:class:`~bridge.engines.soniox.engine.SonioxTranslationSession`; its writer thread is the only
caller of :meth:`open`, :meth:`send_audio`, :meth:`keepalive` and :meth:`end`, so the socket has one
writer of ours. The reader thread parses every response and hands its tokens to ``on_tokens``; it
never writes.

Soniox does not reconnect a request: a dropped socket, or an error response (after which the
server closes), ends the link for good, and the owner opens a new one.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Sequence

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from bridge.engines.soniox.wire import (
    END_OF_AUDIO,
    KEEPALIVE,
    ServerError,
    StartRequest,
    Token,
    WireError,
    parse_response,
)
from bridge.ops.logs import CallLogger

OPEN_TIMEOUT_S = 10.0
# Responses carry text only; a generous bound still stops a runaway frame.
MAX_SERVER_MESSAGE_BYTES = 1024 * 1024
# websockets' own pings find a dead peer even while Soniox has nothing to say.
PING_INTERVAL_S = 20.0


class LinkState(enum.Enum):
    UP = "up"
    ENDING = "ending"  # end of audio sent, waiting for "finished"
    CLOSED = "closed"  # ended the documented way
    DEAD = "dead"  # dropped or refused: the owner opens another


class LinkRefused(Exception):
    """The request was refused before it began (handshake status, unreachable host)."""


class SonioxLink:
    def __init__(
        self,
        *,
        url: str,
        api_key: str,
        request: StartRequest,
        on_tokens: Callable[[Sequence[Token]], None],
        on_change: Callable[[], None],
        log: CallLogger,
        name: str,
    ) -> None:
        self._url = url
        self._api_key = api_key
        self._request = request
        self._on_tokens = on_tokens
        self._on_change = on_change
        self._log = log
        self.name = name
        self.state = LinkState.UP
        self.error: ServerError | None = None
        self.responded = False  # a response other than an error arrived
        self.dead_reason = ""
        self.last_sent_at = 0.0
        self.opened_at = 0.0  # time.monotonic() when the start request went
        self._conn: ClientConnection | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- the owner's writer thread ----------------------------------------------------------

    def open(self) -> None:
        """Connect and send the start request; raises :class:`LinkRefused`."""
        started = time.monotonic()
        conn: ClientConnection | None = None
        try:
            conn = connect(
                self._url,
                # The key goes with the connection, never in the start request (deprecated).
                additional_headers={"Authorization": f"Bearer {self._api_key}"},
                open_timeout=OPEN_TIMEOUT_S,
                max_size=MAX_SERVER_MESSAGE_BYTES,
                compression=None,
                ping_interval=PING_INTERVAL_S,
            )
            conn.send(self._request.to_json())
        except InvalidStatus as exc:
            self.state = LinkState.DEAD
            raise LinkRefused(f"HTTP {exc.response.status_code} from Soniox") from exc
        except (OSError, TimeoutError, ConnectionClosed) as exc:
            self.state = LinkState.DEAD
            self._close_quietly(conn)
            raise LinkRefused(f"Soniox unreachable: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # a broken handshake (InvalidMessage...): unavailable too
            self.state = LinkState.DEAD
            self._close_quietly(conn)
            raise LinkRefused(f"Soniox handshake failed: {type(exc).__name__}") from exc
        self._conn = conn
        self.last_sent_at = self.opened_at = time.monotonic()
        self._log.info(
            "Soniox request %s open in %.0f ms (target %s)",
            self.name,
            1000 * (self.last_sent_at - started),
            self._request.target_language,
        )
        self._reader = threading.Thread(
            target=self._run_reader, args=(conn,), name=f"soniox-reader:{self.name}", daemon=True
        )
        self._reader.start()

    def send_audio(self, pcm: bytes) -> bool:
        """One binary frame of audio; False when the link cannot take it (nothing was sent)."""
        return self._send(pcm)

    def keepalive(self) -> bool:
        return self._send(KEEPALIVE)

    def end(self) -> None:
        """End of audio (an empty frame): Soniox answers with what is left, then ``finished``."""
        with self._lock:
            if self.state is not LinkState.UP:
                return
        if self._send(END_OF_AUDIO):
            with self._lock:
                if self.state is LinkState.UP:
                    self.state = LinkState.ENDING
        else:
            self.close()

    def join(self, timeout: float) -> None:
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout)
            if reader.is_alive():
                self.close()  # no "finished" in time: stop waiting for it
                reader.join(1.0)

    def close(self) -> None:
        self._close_quietly(self._conn)

    def _close_quietly(self, conn: ClientConnection | None) -> None:
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken socket may raise; nothing to do
                self._log.debug("closing Soniox socket raised", exc_info=True)

    @property
    def ended(self) -> bool:
        return self.state in (LinkState.CLOSED, LinkState.DEAD)

    def _send(self, message: bytes | str) -> bool:
        conn = self._conn
        if conn is None or self.state is not LinkState.UP:
            return False
        try:
            conn.send(message)
        except (ConnectionClosed, OSError) as exc:
            self._log.info("Soniox send failed (%s); holding audio", type(exc).__name__)
            return False
        self.last_sent_at = time.monotonic()
        return True

    # -- reader thread ----------------------------------------------------------------------

    def _run_reader(self, conn: ClientConnection) -> None:
        reason = "Soniox closed the request"
        finished = False
        try:
            for message in conn:
                try:
                    response = parse_response(message)
                except WireError as exc:
                    self._log.warning("ignoring a malformed Soniox response: %s", exc)
                    continue
                if response.error is not None:
                    self.error = response.error
                    reason = str(response.error)
                    break
                self.responded = True
                if response.tokens:
                    self._on_tokens(response.tokens)
                if response.finished:
                    finished = True
                    break
        except ConnectionClosed as exc:
            reason = f"Soniox socket lost (close {exc.rcvd.code if exc.rcvd else 1006})"
        except Exception as exc:  # noqa: BLE001 - thread boundary: this link is over
            self._log.exception("Soniox reader failed")
            reason = f"Soniox reader failed: {type(exc).__name__}"
        finally:
            self.close()
            with self._lock:
                self.state = LinkState.CLOSED if finished else LinkState.DEAD
                self.dead_reason = "" if finished else reason
            if not finished:
                self._log.warning("Soniox request %s ended: %s", self.name, reason)
            self._on_change()
