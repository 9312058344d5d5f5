"""What one leg hears, frame by frame: translated audio, the other party's voice under it, pacing.

Pure logic with the clock passed in, so it is tested without sleeping. Twilio plays what we send
in real time and buffers the rest; we keep its buffer at most ``max_ahead_s`` deep. With the
passthrough on, that lead is short (the original voice exists only as it arrives, so frames
that carry it cannot run far ahead); with it off, up to a second of translation may be queued at
Twilio. Either way a translated chunk's first frame leaves at once. Pacing is anchored to a
clock estimate of when Twilio's buffer runs dry (``play_end``), never to ``sleep(0.02)``.

Stay near-live: translated audio waiting here is bounded by ``backlog_max_s``. Past it, policy
``drop-oldest`` drops the oldest unsent audio; ``clear`` drops all of it, tells Twilio to
``clear`` what it holds, and resumes from the newest chunk.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bridge.audio import FRAME_MS, TWILIO_FRAME_BYTES, TWILIO_RATE_HZ, Samples
from bridge.mixer import db_to_gain, mix

FRAME_S = FRAME_MS / 1000
FRAME_SAMPLES = TWILIO_FRAME_BYTES  # 160 samples of 8 kHz audio in 20 ms
# A trailing part-frame of translation waits for more audio only while Twilio still has this
# much left to play: padding it earlier could put a gap inside continuous speech, later could
# leave the listener in a gap before the utterance's last syllable.
PAD_GUARD_S = 0.04
# Float slack so 50 x 20 ms counts as exactly one second.
_EPS_S = 1e-6
# The other party's voice waiting to be mixed: more than this means our clock fell behind
# theirs; the oldest goes, so the passthrough never lags.
PASSTHROUGH_MAX_S = 0.2
# How far ahead of Twilio's playback frames carrying only the passthrough may run: enough to
# ride out network jitter towards Twilio, small enough that translation arriving next is heard
# at most this much later than it would be with no passthrough at all.
PASSTHROUGH_LEAD_S = 0.04
# After the last translated frame has played, its echo can still come back over the network
# and through the room: the echo guard stays on this much longer.
ECHO_TAIL_S = 0.5
_MAX_MARKS = 256
# How much of what was heard is kept to recognise its echo: the round trip to the handset and
# back (Twilio, the phone network, the room). What Twilio holds unplayed is kept on top.
PLAYED_HISTORY_S = 1.0


@dataclass(frozen=True, slots=True)
class Frame:
    pcm: Samples  # 160 samples, 8 kHz


@dataclass(frozen=True, slots=True)
class MarkOut:
    name: str


@dataclass(frozen=True, slots=True)
class ClearOut:
    """Tell Twilio to drop what it has not played yet."""


Outbound = Frame | MarkOut | ClearOut
LatencyObserver = Callable[[str, float], None]


@dataclass(slots=True)
class _Chunk:
    start: int  # stream position (samples) of the chunk's first sample
    end: int
    received_at: float
    first_sent: bool = False


class Playout:
    """Frames and marks to send, and when. Not thread-safe: the owning leg holds a lock."""

    def __init__(
        self,
        *,
        max_ahead_s: float = 1.0,
        backlog_max_s: float = 10.0,
        policy: str = "drop-oldest",
        passthrough_db: float | None = None,
        duck_db: float = 0.0,
        observe: LatencyObserver | None = None,
        mark_prefix: str = "m",
    ) -> None:
        self._max_ahead = max_ahead_s
        self._backlog_max = int(backlog_max_s * TWILIO_RATE_HZ)
        self._policy = policy
        self._pt_gain = db_to_gain(passthrough_db)
        self._duck_gain = db_to_gain(None if passthrough_db is None else passthrough_db + duck_db)
        self._gain = self._pt_gain
        self._observe = observe
        self._mark_prefix = mark_prefix
        self._buf = np.zeros(0, dtype=np.int16)  # translated, not yet sent
        self._pos = 0  # stream position of _buf[0]
        self._chunks: deque[_Chunk] = deque()
        self._pt = np.zeros(0, dtype=np.int16)
        self._play_end = 0.0
        self._translated_until = 0.0  # when the last translated frame sent ends playing
        # Kept beyond what Twilio holds unplayed (up to the lead), or with a second of lead the
        # audio now echoing would already be gone.
        history_s = PLAYED_HISTORY_S + max_ahead_s
        self._played = np.zeros(int(history_s * TWILIO_RATE_HZ), dtype=np.int16)
        self._played_end = 0  # stream position after _played's last sample (silences too)
        self._dry_owed = 0.0  # silence not yet in _played (a fraction of a sample)
        self._marks: dict[str, float] = {}  # sent, not yet echoed: name → chunk seconds
        self._mark_seq = 0
        self._clear_pending = False
        self.frames_sent = 0
        self.dropped_samples = 0
        self.cleared_samples = 0

    @property
    def backlog_samples(self) -> int:
        return len(self._buf)

    def buffered_s(self, now: float) -> float:
        """Estimated audio Twilio still holds unplayed."""
        return max(0.0, self._play_end - now)

    # -- input ------------------------------------------------------------------------------

    def push(self, pcm: Samples, received_at: float, now: float) -> None:
        """Translated audio (8 kHz) for this listener."""
        if not len(pcm):
            return
        end = self._pos + len(self._buf) + len(pcm)
        self._chunks.append(_Chunk(end - len(pcm), end, received_at))
        self._buf = np.concatenate((self._buf, pcm))
        if len(self._buf) <= self._backlog_max:
            return
        if self._policy == "clear":
            # Jump to live: everything older than this chunk goes, here and at Twilio.
            self._drop(len(self._buf) - len(pcm))
            self.cleared_samples += int(self.buffered_s(now) * TWILIO_RATE_HZ)
            self._play_end = now
            self._translated_until = now
            self._clear_pending = True
        else:
            self._drop(len(self._buf) - self._backlog_max)

    def push_passthrough(self, pcm: Samples) -> None:
        """The other party's own voice (8 kHz), as it arrives."""
        if self._pt_gain == 0.0:
            return
        self._pt = np.concatenate((self._pt, pcm))
        keep = int(PASSTHROUGH_MAX_S * TWILIO_RATE_HZ)
        if len(self._pt) > keep:
            self._pt = self._pt[len(self._pt) - keep :]

    def on_mark(self, name: str, now: float) -> float | None:
        """Twilio has played everything up to mark ``name``; returns when the translated chunk
        the mark closes began to be heard (its length before now), if it is one of ours."""
        duration = self._marks.pop(name, None)
        if not self._marks:
            self._translated_until = min(self._translated_until, now)
        return None if duration is None else now - duration

    # -- echo guard -------------------------------------------------------------------------

    def translation_audible(self, now: float) -> bool:
        """Translated audio is playing to this party, or its echo may still come back."""
        return now < self._translated_until + ECHO_TAIL_S

    def played(self) -> Samples:
        """The last PLAYED_HISTORY_S (plus the lead) of what was sent to this listener (oldest
        first)."""
        return self._played

    def heard(self, now: float) -> tuple[Samples, int]:
        """What of :meth:`played` Twilio has begun playing by ``now`` (what Twilio still holds
        cannot be echoing yet), and the stream position (samples played since the start,
        silences included) just after its last sample, so that positions stay comparable as
        the history slides."""
        if now > self._play_end:  # running dry now: that silence is being heard too
            self._ran_dry(now - self._play_end)
            self._play_end = now
        unheard = min(len(self._played), round(self.buffered_s(now) * TWILIO_RATE_HZ))
        return self._played[: len(self._played) - unheard], self._played_end - unheard

    def _ran_dry(self, seconds: float) -> None:
        """Twilio's buffer ran dry ``seconds`` ago: the listener heard silence meanwhile. It goes
        into the history too, so that the echo path (how far what was heard runs ahead of the
        microphone) stays put across pauses instead of jumping by each pause's length."""
        self._dry_owed += seconds * TWILIO_RATE_HZ
        count = int(self._dry_owed + 1e-6)  # 1.0 s of float clock can be 7999.9999 samples
        self._dry_owed -= count
        self._played_end += count
        count = min(count, len(self._played))
        if count:
            self._played = np.concatenate((self._played[count:], np.zeros(count, np.int16)))

    # -- output -----------------------------------------------------------------------------

    def due(self, now: float) -> tuple[list[Outbound], float | None]:
        """What to send at ``now``, and how long until it is worth asking again (None: idle)."""
        out: list[Outbound] = []
        if self._clear_pending:
            self._clear_pending = False
            out.append(ClearOut())
        if now > self._play_end:
            self._ran_dry(now - self._play_end)
        self._play_end = max(self._play_end, now)
        while True:
            has_pt = len(self._pt) >= FRAME_SAMPLES
            # Frames of the passthrough alone are sent just in time, so that when translation
            # arrives Twilio holds at most PASSTHROUGH_LEAD_S of them ahead of it.
            lead = (
                self._max_ahead
                if self._translation_ready(now, has_pt)
                else min(self._max_ahead, PASSTHROUGH_LEAD_S)
            )
            if self._play_end - now + FRAME_S > lead + _EPS_S:
                break
            translated = self._take_translated(now, has_pt)
            passthrough = self._take_passthrough() if has_pt else None
            if translated is None and passthrough is None:
                break
            target = self._duck_gain if translated is not None else self._pt_gain
            frame = mix(translated, passthrough, self._gain, target)
            out.append(Frame(frame))
            self._played = np.concatenate((self._played[len(frame) :], frame))
            self._played_end += len(frame)
            self._gain = target
            self._play_end += FRAME_S
            self.frames_sent += 1
            if translated is not None:
                self._translated_until = self._play_end
                self._account(now, out)
        return out, self.next_wake(now)

    def _translation_ready(self, now: float, with_passthrough: bool) -> bool:
        return len(self._buf) >= FRAME_SAMPLES or bool(
            len(self._buf) and (with_passthrough or self._play_end - now <= PAD_GUARD_S)
        )

    def _take_translated(self, now: float, with_passthrough: bool) -> Samples | None:
        if not self._translation_ready(now, with_passthrough):
            return None
        taken = min(len(self._buf), FRAME_SAMPLES)
        frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        frame[:taken] = self._buf[:taken]
        self._buf = self._buf[taken:]
        self._pos += taken
        return frame

    def _take_passthrough(self) -> Samples:
        frame, self._pt = self._pt[:FRAME_SAMPLES], self._pt[FRAME_SAMPLES:]
        return frame

    def _drop(self, count: int) -> None:
        self._buf = self._buf[count:]
        self._pos += count
        self.dropped_samples += count
        while self._chunks and self._chunks[0].end <= self._pos:
            self._chunks.popleft()

    def _account(self, now: float, out: list[Outbound]) -> None:
        for chunk in self._chunks:
            if chunk.start >= self._pos:
                break
            if not chunk.first_sent:
                chunk.first_sent = True
                if self._observe is not None:
                    self._observe("first", now - chunk.received_at)
        while self._chunks and self._chunks[0].end <= self._pos:
            chunk = self._chunks.popleft()
            if self._observe is not None:
                self._observe("last", now - chunk.received_at)
            self._mark_seq += 1
            name = f"{self._mark_prefix}{self._mark_seq}"
            self._marks[name] = (chunk.end - chunk.start) / TWILIO_RATE_HZ
            if len(self._marks) > _MAX_MARKS:  # a peer that never echoes must not grow this
                self._marks.pop(next(iter(self._marks)))
            out.append(MarkOut(name))

    def next_wake(self, now: float) -> float | None:
        """How long after ``now`` something will be due (None: nothing until more input)."""
        ahead = self._play_end - now
        if len(self._buf) >= FRAME_SAMPLES:
            return max(0.0, ahead + FRAME_S - self._max_ahead) + 0.001
        if len(self._pt) >= FRAME_SAMPLES:
            lead = min(self._max_ahead, PASSTHROUGH_LEAD_S)
            return max(0.0, ahead + FRAME_S - lead) + 0.001
        if len(self._buf):
            return max(0.0, ahead - PAD_GUARD_S) + 0.001
        return None
