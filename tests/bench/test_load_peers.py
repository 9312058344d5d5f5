"""The load generator's Twilio against a real local WebSocket server standing in for the
bridge's Media Stream endpoint: it paces frames and stops at the hang-up or a closed socket."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from websockets.asyncio.server import ServerConnection, serve

from bench.load_peers import Carrier, Leg, Router

TOKEN = "test-auth-token-7f3a"


@asynccontextmanager
async def streaming_leg(
    close_after: int | None = None,
) -> AsyncIterator[tuple[Carrier, Leg, list[str]]]:
    """A leg streaming to a local server that records the events it gets (and closes the
    socket itself after ``close_after`` media frames)."""
    received: list[str] = []

    async def bridge_stream(ws: ServerConnection) -> None:
        async for raw in ws:
            received.append(json.loads(raw)["event"])
            if close_after is not None and received.count("media") >= close_after:
                await ws.close()

    async with serve(bridge_stream, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        carrier = Carrier(Router(url, [url], TOKEN), "AC" + "5" * 32, "+34911222333", "+1555")
        await carrier.start()
        try:
            leg = Leg("CA1", "caller")
            carrier.legs[leg.call_sid] = leg
            stream = f'<Stream url="ws://127.0.0.1:{port}/s"/>'
            await carrier.connect(leg, f"<Response><Connect>{stream}</Connect></Response>")
            yield carrier, leg, received
        finally:
            await carrier.close()


async def wait_for(condition: object, timeout_s: float = 30.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_no_frame_is_sent_after_the_hang_up() -> None:
    async def run() -> tuple[Leg, list[str]]:
        async with streaming_leg() as (carrier, leg, received):
            carrier.begin_media([leg], time.monotonic())
            await wait_for(lambda: received.count("media") >= 10)
            await carrier.hang_up(leg)
            await asyncio.sleep(0.2)  # a frame sent after the hang-up would land meanwhile
            return leg, received

    leg, received = asyncio.run(run())
    assert "stop" in received
    assert "media" not in received[received.index("stop") :]
    assert max(leg.late_sends) < 1.0  # paced, not a burst


def test_a_closed_socket_stops_the_legs_frames_at_once() -> None:
    """Frames due long ago (the leg hung up, or the loop stalled) into a socket the bridge has
    closed: one attempt, not one per 20 ms since then."""

    async def run() -> Leg:
        async with streaming_leg(close_after=3) as (carrier, leg, _received):
            carrier.begin_media([leg], time.monotonic())
            await wait_for(leg.done.is_set)
            leg.done.clear()  # as if the close were still under way when the frames fell due
            leg.next_due = time.monotonic() - 100.0
            attempts = len(leg.late_sends)
            await carrier._send_due(leg, time.monotonic())
            leg.late_sends = leg.late_sends[attempts:]
            return leg

    leg = asyncio.run(run())
    assert leg.done.is_set()
    assert len(leg.late_sends) == 1
