"""The live view (bridge/web/live.py): calls in progress from the hub's events, bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge.calls.events import CallEnded, CallStarted, EventHub, TextFragment
from bridge.web.live import MAX_SEGMENTS, LiveCalls
from tests.call_events import CALLER, DIALLED, T0, agent_sid_of, call_events, wait_until


def started(sid: str, at: datetime = T0) -> CallStarted:
    return CallStarted(sid, CALLER, DIALLED, "es", "en", "relay", at)


def test_follows_a_call_from_the_hub_and_lets_it_go_after_its_linger() -> None:
    hub = EventHub()
    live = LiveCalls(hub, linger_s=0.3)
    live.start()
    try:
        for e in call_events("CA01", reason=None):
            hub.publish(e)
        assert wait_until(lambda: (d := live.detail("CA01")) is not None and len(d.segments) == 3)
        detail = live.detail(agent_sid_of("CA01"))
        assert detail is not None and detail.summary.active
        assert detail.delays == {"caller_to_agent": 840, "agent_to_caller": 910}
        assert [s.call_sid for s in live.active()] == ["CA01"]
        assert live.caller_sid(agent_sid_of("CA01")) == "CA01"

        hub.publish(CallEnded("CA01", T0 + timedelta(seconds=9), "agent_hung_up", ""))
        assert wait_until(lambda: live.active() == [])
        ended = live.detail("CA01")
        assert ended is not None and ended.summary.end_reason == "agent_hung_up"
        assert not ended.summary.active and ended.summary.duration_s == 9.0
        assert wait_until(lambda: live.detail("CA01") is None, timeout=3)  # linger over
        assert live.caller_sid(agent_sid_of("CA01")) is None
    finally:
        live.close()
    assert live.closed


def test_bounded_in_calls_segments_and_age() -> None:
    live = LiveCalls(EventHub(), max_calls=3, stale_after_s=0.0)
    for i in range(5):
        live.apply(started(f"CA1{i}", T0 + timedelta(minutes=i)))
    assert [s.call_sid for s in live.active()] == ["CA14", "CA13", "CA12"]
    long_call = call_events("CA14", reason=None)[6]  # a SegmentClosed
    for _ in range(MAX_SEGMENTS + 10):
        live.apply(long_call)
    detail = live.detail("CA14")
    assert detail is not None and len(detail.segments) == MAX_SEGMENTS
    live._prune(float("inf"))  # never heard from again: dropped after stale_after_s
    assert live.active() == []


def test_a_watch_gets_a_snapshot_then_every_later_event_once() -> None:
    live = LiveCalls(EventHub())
    assert live.watch("CA20") is None
    live.apply(started("CA20"))
    live.apply(TextFragment("CA20", "caller_to_agent", "source", "uno", 10))
    watch = live.watch("CA20")
    assert watch is not None and watch.snapshot.summary.call_sid == "CA20"
    live.apply(TextFragment("CA20", "caller_to_agent", "source", "dos", 20))
    live.apply(started("CA21"))  # another call: not this watch's business
    live.apply(CallEnded("CA20", datetime.now(UTC), "caller_hung_up", ""))
    got = [watch.get(0.1), watch.get(0.1), watch.get(0.1)]
    assert [type(i.event).__name__ if i else None for i in got] == [
        "TextFragment",
        "CallEnded",
        None,
    ]
    assert got[1] is not None and got[1].summary.end_reason == "caller_hung_up"
    watch.close()
    assert live._watches == {}
