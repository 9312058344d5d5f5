"""Per-frame cost of writing a Media Stream frame: ``.venv/bin/python bench/media_send.py``.

Before (simple-websocket's own ``Server.send``: wsproto framing, then a blocking ``sock.send`` from
the calling thread) against after (``bridge.telephony.stream_socket.StreamSocket.send``: the same
framing under the socket's lock, into the outgoing buffer, then a non-blocking send). Both write the
same ~350-byte ``media`` text over loopback TCP to a peer thread that reads all it gets; frames go
in bursts of ``BURST`` with a short sleep between, so the peer keeps up and the kernel never pushes
back (as at Twilio's pace): what is measured is the path itself. Cost is the sending thread's CPU
time (``time.thread_time``: sleeps do not count) per frame, median over several runs, alternating
the two paths so a change in the machine's load hits both.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

# Run as a script from anywhere: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from simple_websocket import Server
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request

from bench.machine import footer, header
from bridge.telephony.media_wire import media_messages
from bridge.telephony.stream_socket import NoReaderThread, StreamSocket

FRAME = media_messages("MZ" + "0" * 32)(bytes(160))
BURST = 10
PAUSE_S = 0.0005


def connected_server() -> tuple[Server, socket.socket, threading.Thread]:
    """A handshaken server socket and a peer thread draining the other end."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    peer = WSConnection(ConnectionType.CLIENT)
    request = peer.send(Request(host="bench", target="/media")).decode()
    key = next(
        line.split(":", 1)[1].strip()
        for line in request.split("\r\n")
        if line.lower().startswith("sec-websocket-key:")
    )
    environ = {
        "werkzeug.socket": ours,
        "HTTP_HOST": "bench",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_UPGRADE": "websocket",
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
        "HTTP_SEC_WEBSOCKET_KEY": key,
    }
    ws = Server(environ, thread_class=NoReaderThread)

    def drain() -> None:
        while theirs.recv(1 << 16):
            pass
        theirs.close()

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    return ws, ours, drainer


def per_frame_us(send: Any, frames: int) -> float:
    started = time.thread_time()
    for i in range(frames):
        send(FRAME)
        if i % BURST == BURST - 1:
            time.sleep(PAUSE_S)
    return (time.thread_time() - started) / frames * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000, help="frames per run")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(header("Media Stream frame write"))
    before: list[float] = []
    after: list[float] = []
    for _ in range(args.runs):
        ws, ours, drainer = connected_server()
        before.append(per_frame_us(ws.send, args.frames))
        ours.close()
        drainer.join()
        ws, ours, drainer = connected_server()
        stream = StreamSocket(ws)
        after.append(per_frame_us(stream.send, args.frames))
        stream.close()
        ours.close()
        drainer.join()
    b, a = statistics.median(before), statistics.median(after)
    print()
    print("| path | CPU µs per frame (median) | runs |")
    print("| --- | --- | --- |")
    print(f"| simple-websocket `Server.send` (blocking, before) | {b:.2f} | {args.runs} |")
    print(f"| `StreamSocket.send` (one owner, non-blocking, after) | {a:.2f} | {args.runs} |")
    print(f"\nafter − before: {a - b:+.2f} µs per frame ({(a / b - 1) * 100:+.0f} %)")
    print(footer())


if __name__ == "__main__":
    main()
