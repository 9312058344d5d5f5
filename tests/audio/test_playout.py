"""Playout with an injected clock: fixed frames, bounded lead, tails, marks, mixing, backlog,
and the jitter hold (a jittery engine's chunks replayed on a simulated clock)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from bridge.audio.jitter import HOLD_MAX_S, HOLD_MIN_S, WINDOW_S, JitterHold
from bridge.audio.mixer import db_to_gain, rms
from bridge.audio.pcm import Samples
from bridge.audio.playout import (
    ECHO_TAIL_S,
    FRAME_S,
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


def test_chunk_leaves_in_fixed_frames_after_the_hold_with_a_mark_after_it() -> None:
    p = Playout(max_ahead_s=1.0)
    p.push(const(100, 1600), received_at=0.0, now=0.0)  # 200 ms
    out, wait = p.due(0.0)
    # Nothing measured of the engine's jitter yet: the first utterance is held the longest.
    assert out == [] and wait is not None and abs(wait - HOLD_MAX_S) < 0.002
    out, wait = p.due(HOLD_MAX_S)
    assert [len(f) for f in frames(out)] == [FRAME_SAMPLES] * 10
    assert isinstance(out[-1], MarkOut)
    assert wait is None


def test_twilio_buffer_is_kept_under_the_lead() -> None:
    p = Playout(max_ahead_s=0.2, jitter_hold=False)
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
    p = Playout(max_ahead_s=1.0, jitter_hold=False)
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
    p = Playout(
        max_ahead_s=0.1, observe=lambda edge, s: seen.append((edge, round(s, 3))), jitter_hold=False
    )
    p.push(const(1, 1600), received_at=1.0, now=1.0)
    p.due(1.001)
    p.due(1.2)
    assert seen == [("first", 0.001), ("last", 0.2)]


def test_backlog_drop_oldest_keeps_the_newest() -> None:
    p = Playout(max_ahead_s=0.1, backlog_max_s=1.0, jitter_hold=False)
    p.push(const(1, 8000), received_at=0.0, now=0.0)
    p.push(const(2, 4000), received_at=0.0, now=0.0)
    assert p.backlog_samples == 8000
    assert p.dropped_samples == 4000
    out, _ = p.due(0.0)
    assert frames(out)[0].tolist() == [1] * FRAME_SAMPLES  # the newest second survives


def test_backlog_clear_jumps_to_the_newest_chunk_and_clears_twilio() -> None:
    p = Playout(max_ahead_s=1.0, backlog_max_s=1.0, policy="clear")
    p.push(const(1, 8000), received_at=0.0, now=0.0)
    p.due(HOLD_MAX_S)  # 1 s queued at Twilio, after the hold
    now = HOLD_MAX_S + 0.1
    p.push(const(2, 4000), received_at=now, now=now)
    p.push(const(3, 6000), received_at=now, now=now)  # 1.25 s waiting here: over the bound
    out, _ = p.due(now)
    assert isinstance(out[0], ClearOut)
    # The listener has waited long enough: the newest chunk plays at once, not held back.
    assert frames(out)[0].tolist() == [3] * FRAME_SAMPLES
    assert p.dropped_samples == 4000
    assert p.cleared_samples == 7200  # the 0.9 s Twilio still held
    # The same while the first utterance is still held back: the hold is over too.
    p = Playout(max_ahead_s=1.0, backlog_max_s=1.0, policy="clear")
    p.push(const(1, 8000), received_at=0.0, now=0.0)
    p.push(const(2, 4000), received_at=0.01, now=0.01)
    out, _ = p.due(0.01)
    assert isinstance(out[0], ClearOut) and frames(out)[0].tolist() == [2] * FRAME_SAMPLES


def test_passthrough_is_mixed_under_translation_and_ducked() -> None:
    p = Playout(max_ahead_s=0.1, passthrough_db=-14.0, duck_db=-12.0, jitter_hold=False)
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
    p = Playout(max_ahead_s=0.1, passthrough_db=0.0, duck_db=0.0, jitter_hold=False)
    p.push(const(30000, 160), received_at=0.0, now=0.0)
    p.push_passthrough(const(30000, 160))
    out, _ = p.due(0.0)
    assert frames(out)[0].max() == 32767 and frames(out)[0].min() == 32767


def test_translation_audible_follows_marks_with_an_echo_tail() -> None:
    p = Playout(max_ahead_s=1.0, jitter_hold=False)
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


# -- the jitter hold: a jittery engine replayed on a simulated clock ------------------------

RATE_HZ = 8000


@dataclass
class EngineSession:
    """What an engine sent: chunks with their arrival times, per utterance."""

    chunks: list[tuple[float, np.ndarray]] = field(default_factory=list)
    utterances: list[np.ndarray] = field(default_factory=list)
    first_arrivals: list[float] = field(default_factory=list)


def engine_session(seed: int, jitter_s: float, utterances: int = 6) -> EngineSession:
    """The shape of a real session: ~200 ms chunks that are not whole 20 ms frames, arriving
    in order within ``jitter_s`` of real time (the engine keeps up on average), utterances
    apart by pauses. Utterance k's samples are 1000 (k + 1) + 0..899: never 0, so silence put
    in by the playout shows, and each sample tells which utterance it is from."""
    rng = np.random.default_rng(seed)
    session = EngineSession()
    t, last = 0.3, 0.0
    for k in range(utterances):
        length, pos, parts = int(rng.uniform(1.5, 3.0) * RATE_HZ), 0, []
        while pos < length:
            n = int(rng.integers(1500, 1700))
            n += n % FRAME_SAMPLES == 0
            pcm = (1000 * (k + 1) + rng.integers(0, 900, n)).astype(np.int16)
            last = max(last, t + pos / RATE_HZ + rng.uniform(-jitter_s, jitter_s))
            if pos == 0:
                session.first_arrivals.append(last)
            session.chunks.append((last, pcm))
            parts.append(pcm)
            pos += n
        session.utterances.append(np.concatenate(parts))
        t += pos / RATE_HZ + rng.uniform(0.6, 1.5)
    return session


def replay(p: Playout, session: EngineSession, passthrough: bool) -> list[tuple[float, Samples]]:
    """Drive the playout as a leg's writer does: on every arrival and when it asks to be woken.
    The other party's voice (silence here, so only the translation shows) arrives every 20 ms.
    Returns the frames sent and when."""
    sent: list[tuple[float, Samples]] = []
    i, wake = 0, 0.0
    pt_next = 0.0 if passthrough else math.inf
    end = session.chunks[-1][0] + 2.0
    while True:
        next_chunk = session.chunks[i][0] if i < len(session.chunks) else math.inf
        now = min(next_chunk, pt_next, wake)
        if now > end:
            return sent
        while i < len(session.chunks) and session.chunks[i][0] <= now:
            p.push(session.chunks[i][1], session.chunks[i][0], now)
            i += 1
        if pt_next <= now:
            p.push_passthrough(const(0, FRAME_SAMPLES))
            pt_next += 0.02
        out, wait = p.due(now)
        sent += [(now, f) for f in frames(out)]
        wake = math.inf if wait is None else now + wait


@dataclass
class Heard:
    inserted_s: list[float]  # silences put inside an utterance
    underruns_s: list[float]  # Twilio's buffer dry inside an utterance
    holds_s: list[float]  # first chunk's arrival to its first sample playing, per utterance


def listen(session: EngineSession, sent: list[tuple[float, Samples]]) -> Heard:
    """What the listener hears: Twilio plays each frame on arrival, or after what it holds."""
    heard = np.concatenate([f for _, f in sent])
    starts, play_end = [], -math.inf
    for at, f in sent:
        starts.append(max(at, play_end))
        play_end = starts[-1] + len(f) / RATE_HZ
    times = np.concatenate(
        [s + np.arange(len(f)) / RATE_HZ for s, (_, f) in zip(starts, sent, strict=True)]
    )
    voiced = np.flatnonzero(heard)
    # Nothing lost, altered or reordered.
    assert np.array_equal(heard[voiced], np.concatenate(session.utterances))
    utterance = heard[voiced] // 1000
    inside = np.flatnonzero(utterance[1:] == utterance[:-1])  # consecutive, same utterance
    a, b = voiced[inside], voiced[inside + 1]
    gaps = times[b] - times[a] - (b - a) / RATE_HZ
    firsts = voiced[np.flatnonzero(np.diff(utterance, prepend=0))]
    return Heard(
        inserted_s=((b - a - 1)[b > a + 1] / RATE_HZ).tolist(),
        underruns_s=gaps[gaps > 1e-6].tolist(),
        holds_s=(times[firsts] - np.array(session.first_arrivals)).tolist(),
    )


@pytest.mark.parametrize("passthrough_db", [None, -14.0])
def test_jittery_engine_is_heard_without_inserted_silence_or_underruns(
    passthrough_db: float | None,
) -> None:
    session = engine_session(seed=7, jitter_s=0.04)
    lead = 1.0 if passthrough_db is None else 0.1  # as the leg sets it
    p = Playout(max_ahead_s=lead, passthrough_db=passthrough_db, duck_db=-12.0)
    heard = listen(session, replay(p, session, passthrough=passthrough_db is not None))
    # Each utterance is the engine's output exactly, padded only after its true end...
    assert heard.inserted_s == []
    # ...and plays without a break, at the price of a bounded hold at its start.
    assert heard.underruns_s == []
    assert max(heard.holds_s) <= HOLD_MAX_S + 0.025  # + a passthrough frame + a wake-up


def test_hold_adapts_to_the_jitter_measured() -> None:
    holds = {}
    for jitter_s in (0.0, 0.02, 0.04):
        session = engine_session(seed=3, jitter_s=jitter_s)
        heard = listen(session, replay(Playout(), session, passthrough=False))
        assert heard.inserted_s == [] and heard.underruns_s == []
        assert heard.holds_s[0] == pytest.approx(HOLD_MAX_S, abs=0.002)  # nothing known yet
        holds[jitter_s] = heard.holds_s[1:]
    # A steady engine needs slack only for its part-frames: the hold drops to its floor.
    assert max(holds[0.0]) == pytest.approx(HOLD_MIN_S, abs=0.002)
    assert max(holds[0.0]) < np.mean(holds[0.02]) < np.mean(holds[0.04])


def test_hold_forgets_a_stall_once_it_is_out_of_the_window() -> None:
    hold = JitterHold()
    for i in range(10):
        hold.record(0.0, now=float(i))  # a steady engine
    steady = hold.hold_s(FRAME_S + PAD_GUARD_S)
    assert steady == HOLD_MIN_S
    hold.record(0.5, now=10.0)  # one stall: held for, as far as the bound allows
    assert hold.hold_s(FRAME_S + PAD_GUARD_S) == HOLD_MAX_S
    for i in range(11, 12 + int(WINDOW_S)):
        hold.record(0.0, now=float(i))
    assert hold.hold_s(FRAME_S + PAD_GUARD_S) == steady


def test_without_jitter_hold_live_frames_leave_as_they_arrive() -> None:
    """Relay audio: the other party's voice in whole 20 ms frames, paced live."""
    p = Playout(max_ahead_s=0.1, jitter_hold=False)
    for i in range(20):
        now = 0.3 + i * 0.02 + (0.007 if i % 3 else 0.0)
        p.push(const(i + 1, FRAME_SAMPLES), received_at=now, now=now)
        out, _ = p.due(now)
        assert [f.tolist() for f in frames(out)] == [[i + 1] * FRAME_SAMPLES]
