"""Playout with an injected clock: fixed frames, bounded lead, tails, marks, mixing, backlog."""

from __future__ import annotations

import numpy as np

from bridge.audio.mixer import db_to_gain, rms
from bridge.audio.playout import (
    ECHO_TAIL_S,
    FRAME_SAMPLES,
    PAD_GUARD_S,
    ClearOut,
    Frame,
    MarkOut,
    Outbound,
    Playout,
)


def frames(out: list[Outbound]) -> list[np.ndarray]:
    return [o.pcm for o in out if isinstance(o, Frame)]


def const(value: int, n: int) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


def tone(n: int, amplitude: float = 10000.0, freq: float = 400.0) -> np.ndarray:
    t = np.arange(n)
    return (amplitude * np.sin(2 * np.pi * freq * t / 8000)).astype(np.int16)


def test_chunk_leaves_at_once_in_fixed_frames_with_a_mark_after_it() -> None:
    p = Playout(max_ahead_s=1.0)
    p.push(const(100, 1600), received_at=0.0, now=0.0)  # 200 ms
    out, wait = p.due(0.0)
    assert [len(f) for f in frames(out)] == [FRAME_SAMPLES] * 10
    assert isinstance(out[-1], MarkOut)
    assert wait is None


def test_twilio_buffer_is_kept_under_the_lead() -> None:
    p = Playout(max_ahead_s=0.2)
    p.push(const(100, 8000), received_at=0.0, now=0.0)  # 1 s of audio
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
    p.push(const(1, 1700), received_at=0.0, now=0.0)  # 10 frames + 100 samples
    out, wait = p.due(0.0)
    assert len(frames(out)) == 10
    assert wait is not None and abs(wait - (0.2 - PAD_GUARD_S)) < 0.01
    p.push(const(2, 60), received_at=0.05, now=0.05)  # more arrives: joined, not padded
    out, _ = p.due(0.05)
    assert [f.tolist() for f in frames(out)] == [[1] * 100 + [2] * 60]
    p.push(const(3, 10), received_at=0.1, now=0.1)
    out, wait = p.due(0.1)
    assert frames(out) == []
    assert wait is not None
    out, _ = p.due(0.22 - PAD_GUARD_S + 0.001)  # Twilio nearly dry: pad and send the tail
    assert [f.tolist() for f in frames(out)] == [[3] * 10 + [0] * 150]


def test_latency_observer_sees_first_and_last_frame_of_each_chunk() -> None:
    seen: list[tuple[str, float]] = []
    p = Playout(max_ahead_s=0.1, observe=lambda edge, s: seen.append((edge, round(s, 3))))
    p.push(const(1, 1600), received_at=1.0, now=1.0)
    p.due(1.001)
    p.due(1.2)
    assert seen == [("first", 0.001), ("last", 0.2)]


def test_backlog_drop_oldest_keeps_the_newest() -> None:
    p = Playout(max_ahead_s=0.1, backlog_max_s=1.0)
    p.push(const(1, 8000), received_at=0.0, now=0.0)
    p.push(const(2, 4000), received_at=0.0, now=0.0)
    assert p.backlog_samples == 8000
    assert p.dropped_samples == 4000
    out, _ = p.due(0.0)
    assert frames(out)[0].tolist() == [1] * FRAME_SAMPLES  # the newest second survives


def test_backlog_clear_jumps_to_the_newest_chunk_and_clears_twilio() -> None:
    p = Playout(max_ahead_s=1.0, backlog_max_s=1.0, policy="clear")
    p.push(const(1, 8000), received_at=0.0, now=0.0)
    p.due(0.0)  # 1 s queued at Twilio
    p.push(const(2, 4000), received_at=0.1, now=0.1)
    p.push(const(3, 6000), received_at=0.1, now=0.1)  # 1.25 s waiting here: over the bound
    out, _ = p.due(0.1)
    assert isinstance(out[0], ClearOut)
    assert frames(out)[0].tolist() == [3] * FRAME_SAMPLES
    assert p.dropped_samples == 4000
    assert p.cleared_samples == 7200  # the 0.9 s Twilio still held


def test_passthrough_is_mixed_under_translation_and_ducked() -> None:
    p = Playout(max_ahead_s=0.1, passthrough_db=-14.0, duck_db=-12.0)
    voice = tone(FRAME_SAMPLES * 20, 10000)
    for i in range(4):  # the other party speaks, no translation: voice alone at -14 dB
        p.push_passthrough(voice[i * 160 : (i + 1) * 160])
    out, _ = p.due(0.0)
    alone = frames(out)
    assert len(alone) == 2  # the passthrough alone runs at most 40 ms ahead of playback
    level = 20 * np.log10(rms(alone[-1]) / rms(voice[160:320]))
    assert abs(level - (-14.0)) < 0.2
    # Translation starts: the voice under it ducks to -26 dB, the translation is untouched.
    p.push(const(0, 1600), received_at=0.04, now=0.04)
    for i in range(4, 12):
        p.push_passthrough(voice[i * 160 : (i + 1) * 160])
    out, _ = p.due(0.04)
    under = frames(out)
    assert len(under) == 5  # translation may run 100 ms ahead: its first frame leaves at once
    ducked = 20 * np.log10(rms(under[-1]) / rms(voice[160 * 6 : 160 * 7]))
    assert abs(ducked - (-26.0)) < 0.3


def test_mix_saturates_instead_of_wrapping() -> None:
    p = Playout(max_ahead_s=0.1, passthrough_db=0.0, duck_db=0.0)
    p.push(const(30000, 160), received_at=0.0, now=0.0)
    p.push_passthrough(const(30000, 160))
    out, _ = p.due(0.0)
    assert frames(out)[0].max() == 32767 and frames(out)[0].min() == 32767


def test_translation_audible_follows_marks_with_an_echo_tail() -> None:
    p = Playout(max_ahead_s=1.0)
    p.push(tone(1600), received_at=0.0, now=0.0)
    out, _ = p.due(0.0)
    mark = next(o for o in out if isinstance(o, MarkOut))
    assert p.translation_audible(0.1)
    assert np.array_equal(p.played()[-1600:], tone(1600))  # what was sent, kept for the guard
    p.on_mark(mark.name, 0.2)  # Twilio played it all by 0.2 s
    assert p.translation_audible(0.2 + ECHO_TAIL_S - 0.01)
    assert not p.translation_audible(0.2 + ECHO_TAIL_S + 0.01)


def test_levels_in_db() -> None:
    assert abs(db_to_gain(-6.0) - 0.501) < 0.001
    assert db_to_gain(None) == 0.0
