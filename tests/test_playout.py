"""Playout pacing with an injected clock: fixed frames, bounded lead, tails, marks, bounds."""

from __future__ import annotations

from bridge.audio import TWILIO_FRAME_BYTES, ULAW_SILENCE
from bridge.playout import PAD_GUARD_S, Frame, MarkOut, Playout


def frames(out: list[Frame | MarkOut]) -> list[bytes]:
    return [o.ulaw for o in out if isinstance(o, Frame)]


def test_chunk_leaves_at_once_in_fixed_frames_with_a_mark_after_it() -> None:
    p = Playout(max_ahead_s=1.0)
    p.push(b"\x01" * 1600, received_at=0.0)  # 200 ms
    out, wait = p.due(0.0)
    assert [len(f) for f in frames(out)] == [TWILIO_FRAME_BYTES] * 10
    assert isinstance(out[-1], MarkOut)
    assert wait is None


def test_twilio_buffer_is_kept_under_the_lead() -> None:
    p = Playout(max_ahead_s=0.2)
    p.push(b"\x01" * 8000, received_at=0.0)  # 1 s of audio
    out, wait = p.due(0.0)
    assert len(frames(out)) == 10  # 200 ms ahead, no more
    assert wait is not None and 0 < wait <= 0.03
    out, _ = p.due(0.1)  # 100 ms later, 100 ms of room again
    assert len(frames(out)) == 5
    # Pacing is anchored to the clock: no drift however the calls are spaced.
    total = 15
    for step in range(1, 200):
        now = 0.1 + step * 0.013
        out, _ = p.due(now)
        total += len(frames(out))
        assert total * 0.02 - now <= 0.2 + 0.02 + 1e-9
    assert total == 50


def test_trailing_part_frame_waits_for_more_audio_then_is_padded_in_time() -> None:
    p = Playout(max_ahead_s=1.0)
    p.push(b"\x01" * 1700, received_at=0.0)  # 10 frames + 100 bytes
    out, wait = p.due(0.0)
    assert len(frames(out)) == 10
    assert wait is not None and abs(wait - (0.2 - PAD_GUARD_S)) < 0.01
    p.push(b"\x02" * 60, received_at=0.05)  # more arrives: joined, not padded
    out, _ = p.due(0.05)
    assert frames(out) == [b"\x01" * 100 + b"\x02" * 60]
    p.push(b"\x03" * 10, received_at=0.1)
    out, wait = p.due(0.1)
    assert frames(out) == []
    assert wait is not None
    out, _ = p.due(0.22 - PAD_GUARD_S + 0.001)  # Twilio nearly dry: pad and send the tail
    assert frames(out) == [b"\x03" * 10 + bytes([ULAW_SILENCE]) * 150]


def test_latency_observer_sees_first_and_last_frame_of_each_chunk() -> None:
    seen: list[tuple[str, float]] = []
    p = Playout(max_ahead_s=0.1, observe=lambda edge, s: seen.append((edge, round(s, 3))))
    p.push(b"\x01" * 1600, received_at=1.0)
    p.due(1.001)
    p.due(1.2)
    assert seen == [("first", 0.001), ("last", 0.2)]


def test_backlog_is_bounded_and_drops_oldest() -> None:
    p = Playout(max_ahead_s=0.1, max_backlog_s=1.0)
    p.push(b"\x01" * 8000, received_at=0.0)
    p.push(b"\x02" * 4000, received_at=0.0)
    assert p.backlog_bytes == 8000
    assert p.dropped_bytes == 4000
    out, _ = p.due(0.0)
    assert frames(out)[0] == b"\x01" * TWILIO_FRAME_BYTES
