"""What persistence costs the audio path: publishing, and the writer's CPU per event.

A call thread pays for ``EventHub.publish`` (appending to each subscriber's queue); the
store's writer and the live view pay for the rest on their own threads, which still share
the GIL and the cores with the audio threads. This publishes calls shaped like real ones
(per call: start, dial, answer, fragments, segments, delays, end) and reports the publish
cost with the store and the live view subscribed, and the CPU the writer spends per event.

    .venv/bin/python bench/store.py [--calls 200] [--url sqlite:////tmp/bench.sqlite3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.calls.events import (
    AgentAnswered,
    AgentDialled,
    CallEnded,
    CallEvent,
    CallStarted,
    DelayMeasured,
    EventHub,
    SegmentClosed,
    TextFragment,
)
from bridge.engines.contract import Direction, TextKind
from bridge.records.store import CallStore
from bridge.web.live import LiveCalls

FRAGMENTS_PER_SEGMENT = 12  # deltas of about a word each, source and translation
YIELD_EVERY = 50


def one_call(n: int, segments: int) -> list[CallEvent]:
    sid = f"CA{n:032x}"
    now = datetime.now(UTC)
    events: list[CallEvent] = [
        CallStarted(sid, "+34911222333", "+15550002222", "es", "en", "openai", now),
        AgentDialled(sid, f"CB{n:032x}", "+15557654321", now),
        AgentAnswered(sid, now),
    ]
    for seq in range(1, segments + 1):
        direction: Direction = "caller_to_agent" if seq % 2 else "agent_to_caller"
        start = seq * 4000
        for i in range(FRAGMENTS_PER_SEGMENT):
            kind: TextKind = "source" if i % 2 else "translation"
            events.append(TextFragment(sid, direction, kind, "palabra ", start + 100 * i))
        events.append(DelayMeasured(sid, direction, 800, start + 800))
        events.append(
            SegmentClosed(
                sid, direction, seq, "hola " * 20, "hello " * 20, start, start + 3000, 800
            )
        )
    events.append(CallEnded(sid, datetime.now(UTC), "caller_hung_up", ""))
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--segments", type=int, default=20, help="per call")
    parser.add_argument("--url", help="database URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="bench-store-")
    url = args.url or f"sqlite:///{folder}/bench.sqlite3"

    calls = [one_call(n, args.segments) for n in range(args.calls)]
    events = [e for call in calls for e in call]
    bare = EventHub()
    bare_costs = [_timed(bare, e) for e in events[:20_000]]

    hub = EventHub()
    store = CallStore(url)
    store.migrate()
    store.start(hub)
    live = LiveCalls(hub)
    live.start()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    costs = []
    for i, e in enumerate(events):
        costs.append(_timed(hub, e))
        if i % YIELD_EVERY == 0:
            # Call threads block on sockets between events; a loop that never does would be
            # starved of the GIL by the other threads in bursts (CPython's convoy effect) and
            # measure that instead of publishing.
            time.sleep(0)
    writer = store.writer
    assert writer is not None
    stored = sum(not isinstance(e, TextFragment) for e in events)
    while writer.written < stored:
        time.sleep(0.005)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    live.close()
    store.close()

    q = statistics.quantiles(costs, n=100)
    print(f"{url.split(':')[0]}: {args.calls} calls, {len(events)} events ({stored} stored)")
    print(
        f"publish, store and live view subscribed: p50 {statistics.median(costs):.2f} µs, "
        f"p99 {q[98]:.2f} µs, max {max(costs):.0f} µs "
        f"(no subscriber: p50 {statistics.median(bare_costs):.2f} µs)"
    )
    # Process CPU time of all threads, less what the publishing itself took: the writer's and
    # the live view's share (plus this loop's own overhead, which is small).
    others = cpu - sum(costs) / 1e6
    print(
        f"writer + live view CPU: {1e6 * others / len(events):.1f} µs per event published, "
        f"{1e6 * others / stored:.0f} µs per event stored; "
        f"all written {wall:.2f} s after the first publish"
    )
    call_cpu_ms = 1e3 * others / args.calls
    print(f"per call of {args.segments} segments: {call_cpu_ms:.1f} ms CPU off the call threads")


def _timed(hub: EventHub, event: CallEvent) -> float:
    start = time.perf_counter_ns()
    hub.publish(event)
    return (time.perf_counter_ns() - start) / 1000


if __name__ == "__main__":
    main()
