"""The Media Stream socket (bridge/telephony/stream_socket.py): read in the calling thread, over a
socketpair; written by one owner that never blocks, over loopback TCP against a wsproto stand-in for
Twilio."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from simple_websocket import ConnectionClosed, Server
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Pong, Request, TextMessage

from bridge.audio.pcm import Pcm16
from bridge.calls.leg import JOIN_TIMEOUT_S, CallLeg
from bridge.ops.metrics import Metrics
from bridge.telephony.stream_socket import (
    NoReaderThread,
    StreamSocket,
    finish,
    reads_inline,
    receive,
)

HANDSHAKE = {
    "HTTP_HOST": "bridge.test",
    "HTTP_CONNECTION": "Upgrade",
    "HTTP_UPGRADE": "websocket",
    "HTTP_SEC_WEBSOCKET_VERSION": "13",
}


def accept(ours: socket.socket, theirs: socket.socket) -> tuple[Server, WSConnection]:
    """The WebSocket handshake, with ``ours`` as the bridge's side and ``theirs`` Twilio's."""
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
    return ws, peer


@pytest.fixture
def pair() -> Iterator[tuple[Server, socket.socket, WSConnection]]:
    ours, theirs = socket.socketpair()
    ws, peer = accept(ours, theirs)
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


# -- writing: one owner, never blocking -------------------------------------------------------


@pytest.fixture
def tcp() -> Iterator[tuple[Server, socket.socket, WSConnection]]:
    """A real loopback TCP connection with small buffers, so a peer that reads slowly (or not
    at all) makes the bridge's side run out of room within a few frames."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.socket()
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        theirs.connect(listener.getsockname())
        ours, _ = listener.accept()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.settimeout(10.0)  # a hang fails the test instead of blocking it
    ws, peer = accept(ours, theirs)
    yield ws, theirs, peer
    ours.close()
    theirs.close()


def translation(seconds: float) -> Pcm16:
    """A tone at the engine's rate: the leg streams it in paced 20 ms frames."""
    t = np.arange(int(24000 * seconds))
    return Pcm16((8000 * np.sin(2 * np.pi * 440 * t / 24000)).astype(np.int16), 24000)


def read_until_closed(ws: Server) -> None:
    """The request thread's part: read (pings, the close) until the connection ends."""
    try:
        while True:
            receive(ws, 0.1)
    except ConnectionClosed:
        pass


class TwilioSide:
    """Twilio's end of the stream: parses every byte it reads, frame by frame."""

    def __init__(self, sock: socket.socket, peer: WSConnection) -> None:
        self.sock, self.peer = sock, peer
        self.texts: list[str] = []
        self.pongs: list[bytes] = []
        self.closes: list[CloseConnection] = []
        self._partial = ""

    def read_until(self, done: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "the bridge stopped answering"
            data = self.sock.recv(4096)
            assert data, "the bridge closed the connection"
            self.peer.receive_data(data)
            for event in self.peer.events():
                if isinstance(event, TextMessage):  # may arrive in pieces
                    self._partial += event.data
                    if event.message_finished:
                        self.texts.append(self._partial)
                        self._partial = ""
                elif isinstance(event, Pong):
                    self.pongs.append(bytes(event.payload))
                elif isinstance(event, CloseConnection):
                    self.closes.append(event)
                    # wsproto reports a frame it cannot parse as a close with 1002/1007.
                    assert event.code == 1000, f"a frame did not parse: {event.reason}"


def test_pongs_and_the_close_reply_never_break_into_media_frames(
    tcp: tuple[Server, socket.socket, WSConnection],
) -> None:
    ws, theirs, peer = tcp
    stream = StreamSocket(ws)
    metrics = Metrics()
    leg = CallLeg("CAtest", "caller", metrics)
    reader = threading.Thread(target=read_until_closed, args=(ws,), daemon=True)
    reader.start()
    assert leg.attach(stream, "MZtest")
    leg.play(translation(30.0), time.monotonic())  # media flows for the whole test
    twilio = TwilioSide(theirs, peer)
    # Media is flowing (after the playout's jitter hold) before the pings start.
    twilio.read_until(lambda: len(twilio.texts) > 50)
    sent: list[bytes] = []
    # Bursts of pings while not reading, then reading until every pong is back: both the
    # pongs and the media find the bridge's send buffer full, again and again.
    for burst in range(10):
        for i in range(150):
            payload = f"{burst}:{i}:".encode().ljust(125, b".")  # the largest a ping carries
            sent.append(payload)
            theirs.sendall(peer.send(Ping(payload)))
        twilio.read_until(lambda: len(twilio.pongs) >= len(sent))
    theirs.sendall(peer.send(CloseConnection(code=1000)))
    twilio.read_until(lambda: bool(twilio.closes))
    leg.close()
    reader.join(5.0)

    assert [c.code for c in twilio.closes] == [1000]  # not 1002: every frame parsed
    assert twilio.pongs == sent  # every ping answered once, in order, intact
    messages = [json.loads(text) for text in twilio.texts]
    assert len(messages) > 50
    assert all(m["event"] == "media" and m["streamSid"] == "MZtest" for m in messages)
    assert not leg.write_stalled
    assert metrics.media_write_stalls.labels("caller")._value.get() == 0
    assert not reader.is_alive()


def test_a_peer_that_stops_reading_ends_its_leg_counted_and_logged_once(
    tcp: tuple[Server, socket.socket, WSConnection], caplog: pytest.LogCaptureFixture
) -> None:
    ws, theirs, _ = tcp
    stream = StreamSocket(ws, stall_s=0.5)
    metrics = Metrics()
    leg = CallLeg("CAtest", "caller", metrics)
    reader = threading.Thread(target=read_until_closed, args=(ws,), daemon=True)
    reader.start()
    with caplog.at_level(logging.INFO, logger="bridge.calls.leg"):
        assert leg.attach(stream, "MZtest")
        leg.play(translation(30.0), time.monotonic())
        # Twilio never reads: once the buffers are full, the leg gives up on its own.
        reader.join(20.0)
    assert not reader.is_alive(), "the reading thread still waits on a dead peer"
    assert leg.write_stalled
    assert metrics.media_write_stalls.labels("caller")._value.get() == 1
    stalls = [r for r in caplog.records if "stopped draining" in r.getMessage()]
    assert len(stalls) == 1
    finish(ws)
    # The connection is reset, not closed gracefully behind a full buffer nobody reads.
    with pytest.raises(ConnectionResetError):
        while theirs.recv(65536):
            pass
    leg.close()  # idempotent after the writer ended


def test_closing_a_leg_whose_peer_stopped_reading_does_not_wait_for_it(
    tcp: tuple[Server, socket.socket, WSConnection],
) -> None:
    ws, _, _ = tcp
    stream = StreamSocket(ws, stall_s=600.0)  # far beyond the test: only close() can end it
    leg = CallLeg("CAtest", "caller", Metrics())
    assert leg.attach(stream, "MZtest")
    leg.play(translation(30.0), time.monotonic())
    deadline = time.monotonic() + 20.0
    while not stream.backlogged:
        assert time.monotonic() < deadline, "the send buffer never filled"
        time.sleep(0.01)
    writers = [t for t in threading.enumerate() if t.name.startswith("leg-writer:")]
    started = time.monotonic()
    leg.close()
    # Old code gave up on a writer stuck in send for good after JOIN_TIMEOUT_S; now the writer
    # is never inside a blocking call, so it has ended (loose bound: the machine may be loaded).
    assert not any(t.is_alive() for t in writers)
    assert time.monotonic() - started < JOIN_TIMEOUT_S
    assert not ws.connected
