"""The Media Stream socket read in the calling thread (bridge.telephony.stream_socket)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from simple_websocket import ConnectionClosed, Server
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from bridge.telephony.stream_socket import NoReaderThread, finish, reads_inline, receive

HANDSHAKE = {
    "HTTP_HOST": "bridge.test",
    "HTTP_CONNECTION": "Upgrade",
    "HTTP_UPGRADE": "websocket",
    "HTTP_SEC_WEBSOCKET_VERSION": "13",
}


@pytest.fixture
def pair() -> Iterator[tuple[Server, socket.socket, WSConnection]]:
    ours, theirs = socket.socketpair()
    peer = WSConnection(ConnectionType.CLIENT)
    # The server reads the handshake from the WSGI environ, as under gunicorn; only the
    # client's random key is taken from the request it built.
    request = peer.send(Request(host="bridge.test", target="/media")).decode()
    key = next(
        line.split(":", 1)[1].strip()
        for line in request.split("\r\n")
        if line.lower().startswith("sec-websocket-key:")
    )
    environ = {"werkzeug.socket": ours, "HTTP_SEC_WEBSOCKET_KEY": key, **HANDSHAKE}
    ws = Server(environ, thread_class=NoReaderThread)
    peer.receive_data(theirs.recv(4096))
    assert any(isinstance(e, AcceptConnection) for e in peer.events())
    yield ws, theirs, peer
    ours.close()
    theirs.close()


def test_no_reader_thread_runs_and_messages_arrive_in_order(
    pair: tuple[Server, socket.socket, WSConnection],
) -> None:
    ws, theirs, peer = pair
    assert reads_inline(ws)
    assert not any("simple_websocket" in t.name for t in threading.enumerate())
    # Two messages in one segment: the second comes from the buffer, without a read.
    theirs.sendall(peer.send(TextMessage("one")) + peer.send(TextMessage("two")))
    assert receive(ws, 1.0) == "one"
    assert receive(ws, 1.0) == "two"
    assert receive(ws, 0.05) is None  # nothing more within the timeout


def test_the_peer_closing_answers_the_close_and_raises(
    pair: tuple[Server, socket.socket, WSConnection],
) -> None:
    ws, theirs, peer = pair
    theirs.sendall(peer.send(CloseConnection(code=1000)))
    with pytest.raises(ConnectionClosed):
        receive(ws, 1.0)
    peer.receive_data(theirs.recv(4096))
    assert any(isinstance(e, CloseConnection) for e in peer.events())


def test_a_dropped_connection_raises(pair: tuple[Server, socket.socket, WSConnection]) -> None:
    ws, theirs, _ = pair
    theirs.close()
    with pytest.raises(ConnectionClosed):
        receive(ws, 1.0)


def test_a_socket_with_its_own_reader_is_read_through_it() -> None:
    class Started:
        def receive(self, timeout: float | None = None) -> str:
            return f"read with timeout {timeout}"

    assert receive(Started(), 0.5) == "read with timeout 0.5"


def test_finish_closes_the_socket(pair: tuple[Server, socket.socket, WSConnection]) -> None:
    ws, theirs, _ = pair
    finish(ws)
    assert ws.sock.fileno() == -1
    assert theirs.recv(4096) == b""  # the peer sees the connection end
    with pytest.raises(ConnectionClosed):
        receive(ws, 0.1)
