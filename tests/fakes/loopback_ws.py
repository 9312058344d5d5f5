"""What the vendor WebSocket stand-ins share: a websockets sync server on 127.0.0.1, a record
per connection, abrupt drops, and a teardown that closes every socket and joins every thread."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import ClassVar, Generic, Self, TypeVar

from websockets.sync.server import Server, ServerConnection, serve

JOIN_S = 5.0


@dataclass
class PeerRecord:
    """One client connection as a stand-in saw it."""

    headers: dict[str, str]
    ended: threading.Event = field(default_factory=threading.Event)
    connection: ServerConnection | None = field(default=None, repr=False)

    def drop(self) -> None:
        """Cut the TCP connection without a close frame (the client sees 1006)."""
        if self.connection is not None:
            with contextlib.suppress(OSError):
                self.connection.socket.shutdown(socket.SHUT_RDWR)


R = TypeVar("R", bound=PeerRecord)


class LoopbackServer(Generic[R]):
    """Subclasses set ``PATH`` and implement :meth:`_handle` (one thread per connection)."""

    PATH: ClassVar[str] = "/"

    def __init__(self) -> None:
        self._records: list[R] = []
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    def __enter__(self) -> Self:
        self._server = serve(
            self._handle, "127.0.0.1", 0, ping_interval=None, max_size=None, close_timeout=2
        )
        self._port = int(self._server.socket.getsockname()[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"fake{self.PATH}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        if self._thread is not None:
            self._thread.join(JOIN_S)
        for record in self.snapshot():
            record.drop()
            record.ended.wait(JOIN_S)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._port}{self.PATH}"

    def snapshot(self) -> list[R]:
        """Every connection so far, oldest first."""
        with self._lock:
            return list(self._records)

    def drop_all(self) -> None:
        for record in self.snapshot():
            if not record.ended.is_set():
                record.drop()

    def _track(self, record: R) -> R:
        with self._lock:
            self._records.append(record)
        return record

    def _handle(self, connection: ServerConnection) -> None:
        raise NotImplementedError
