"""Redis pub/sub against Redis streams for moving a leg's audio between instances.

    .venv/bin/python bench/redis_transport.py [--legs 20] [--seconds 3] [--redis-url URL]

Each of ``--legs`` legs sends audio chunks at their real cadence (a 20 ms chunk every 20 ms,
a 100 ms chunk every 100 ms) for ``--seconds``, and one reader per leg receives them, as the
bridge's per-leg readers do (bridge/cluster/fabric.py): streams with ``XADD MAXLEN ~`` and
``XREAD BLOCK``, pub/sub with ``PUBLISH`` and one subscription per leg. Printed as a Markdown
table: the hop from send to receive (p50/p99), messages lost, and CPU per second of audio
carried (this process, both ends, and redis-server). Without ``--redis-url`` a throwaway
redis-server is started on a free port.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.cluster.registry import read_stream
from tests.redis_server import redis_url

# (chunk ms, sample rate, readers late by s)
CONFIGS = ((20, 8000, 0.0), (20, 24000, 0.0), (100, 8000, 0.0), (100, 24000, 0.0), (20, 24000, 0.2))
HEADER = struct.Struct("<dI")  # perf_counter at send, sequence number


def server_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def run_streams(
    client: redis.Redis,
    legs: int,
    chunk: bytes,
    period_s: float,
    seconds: float,
    late_s: float,
) -> list[float]:
    hops: list[list[float]] = [[] for _ in range(legs)]
    stop = threading.Event()

    def reader(i: int) -> None:
        last = b"0"
        key = f"bench:s:{i}"
        while not stop.is_set():
            for entry_id, fields in read_stream(client, key, last, 100, 200):
                last = entry_id
                sent, _seq = HEADER.unpack_from(fields[b"a"])
                hops[i].append(time.perf_counter() - sent)

    def send(i: int, seq: int) -> None:
        payload = HEADER.pack(time.perf_counter(), seq) + chunk
        client.xadd(f"bench:s:{i}", {"a": payload}, maxlen=1000, approximate=True)

    run(legs, period_s, seconds, reader, send, stop, late_s)
    client.delete(*[f"bench:s:{i}" for i in range(legs)])
    return [h for leg in hops for h in leg]


def run_pubsub(
    client: redis.Redis,
    legs: int,
    chunk: bytes,
    period_s: float,
    seconds: float,
    late_s: float,
) -> list[float]:
    hops: list[list[float]] = [[] for _ in range(legs)]
    stop = threading.Event()
    subs: list[Any] = []

    def reader(i: int) -> None:
        sub = client.pubsub(ignore_subscribe_messages=True)
        sub.subscribe(f"bench:p:{i}")
        subs.append(sub)
        while not stop.is_set():
            message = sub.get_message(timeout=0.2)
            if message is not None and message["type"] == "message":
                sent, _seq = HEADER.unpack_from(message["data"])
                hops[i].append(time.perf_counter() - sent)

    def send(i: int, seq: int) -> None:
        client.publish(f"bench:p:{i}", HEADER.pack(time.perf_counter(), seq) + chunk)

    run(legs, period_s, seconds, reader, send, stop, late_s)
    for sub in subs:
        sub.close()
    return [h for leg in hops for h in leg]


def run(
    legs: int,
    period_s: float,
    seconds: float,
    reader: Callable[[int], None],
    send: Callable[[int, int], None],
    stop: threading.Event,
    late_s: float,
) -> None:
    """Senders at their cadence; readers from the start (``late_s`` 0: after 0.3 s for them
    to subscribe) or ``late_s`` after the senders began, as a listener's leg connecting
    after the translation started, or a reader reconnecting."""
    readers = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(legs)]
    if not late_s:
        for t in readers:
            t.start()
        time.sleep(0.3)

    def sender(i: int) -> None:
        start = time.perf_counter() + i * period_s / legs  # legs spread over the period
        for seq in range(int(seconds / period_s)):
            time.sleep(max(0.0, start + seq * period_s - time.perf_counter()))
            send(i, seq)

    senders = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(legs)]
    for t in senders:
        t.start()
    if late_s:
        time.sleep(late_s)
        for t in readers:
            t.start()
    for t in senders:
        t.join()
    time.sleep(0.5)  # the last messages arrive
    stop.set()
    for t in readers:
        t.join(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--legs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()

    def bench(url: str) -> None:
        client = redis.Redis.from_url(url, socket_timeout=10)
        print(f"{args.legs} legs, each sending at its real cadence for {args.seconds:g} s\n")
        print(
            "| transport | chunk | bytes | msgs/s | hop p50 | hop p99 | lost "
            "| client CPU / audio s | redis CPU / audio s |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for chunk_ms, rate, late in CONFIGS:
            chunk = bytes(2 * rate * chunk_ms // 1000)  # PCM16
            period = chunk_ms / 1000
            sent = args.legs * int(args.seconds / period)
            for name, fn in (("streams", run_streams), ("pub/sub", run_pubsub)):
                late_note = f", readers {1000 * late:.0f} ms late" if late else ""
                cpu0, srv0 = time.process_time(), server_cpu_s(client)
                hops = fn(client, args.legs, chunk, period, args.seconds, late)
                cpu, srv = time.process_time() - cpu0, server_cpu_s(client) - srv0
                audio_s = args.legs * args.seconds
                q = statistics.quantiles(hops, n=100) if len(hops) > 1 else [0.0] * 99
                print(
                    f"| {name} | {chunk_ms} ms @ {rate // 1000} kHz{late_note} | {len(chunk)} "
                    f"| {sent / args.seconds:.0f} | {1000 * statistics.median(hops):.2f} ms "
                    f"| {1000 * q[98]:.2f} ms | {sent - len(hops)} "
                    f"| {1000 * cpu / audio_s:.2f} ms | {1000 * srv / audio_s:.2f} ms |"
                )
        client.close()

    if args.redis_url:
        bench(args.redis_url)
    else:
        with redis_url() as url:
            bench(url)


if __name__ == "__main__":
    main()
