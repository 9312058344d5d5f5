"""What one leg hears, frame by frame: translated audio, the other party's voice under it, pacing.

Pure logic with the clock passed in, so it is tested without sleeping. Twilio plays what we send
in real time and buffers the rest; we keep its buffer at most ``max_ahead_s`` deep. With the
passthrough on, that lead is short (the original voice exists only as it arrives, so frames
that carry it cannot run far ahead); with it off, up to a second of translation may be queued at
Twilio. Pacing is anchored to a clock estimate of when Twilio's buffer runs dry (``play_end``),
never to ``sleep(0.02)``.

Jitter: engines send translated speech in chunks (~200 ms, not whole 20 ms frames) that arrive
tens of milliseconds early or late. An utterance's first frame is held back just long enough
for the chunks behind it to arrive before Twilio runs out (see bridge/audio/jitter.py: measured per
stream, 40-120 ms); once it plays, its frames follow back to back. A part-frame left at the end
of a chunk waits for the next chunk; it is padded with silence only when the utterance has
ended, that is when nothing more arrived by the time Twilio is about to run out of what is
ahead of it (the hold makes the next chunk of a continuing utterance arrive before that). The
passthrough fills the hold but never a gap inside an utterance. Audio that is already paced
live (``ENGINE=relay``) is built with no hold.

Stay near-live: translated audio waiting here is bounded by ``backlog_max_s``. Past it, policy
``drop-oldest`` drops the oldest unsent audio; ``clear`` drops all of it, tells Twilio to
``clear`` what it holds, and resumes from the newest chunk.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bridge.audio.jitter import HOLD_MAX_S, HOLD_MIN_S, JitterHold
from bridge.audio.mixer import db_to_gain, mix
from bridge.audio.pcm import FRAME_MS, TWILIO_FRAME_BYTES, TWILIO_RATE_HZ, Samples

FRAME_S = FRAME_MS / 1000
FRAME_SAMPLES = TWILIO_FRAME_BYTES  # 160 samples of 8 kHz audio in 20 ms
# How long before Twilio would run out of translation a frame is sent at the latest: a writer
# wake-up and a send fit well within it. A part-frame still waiting then ends its utterance
# (padded); the next chunk of a continuing one arrives before, thanks to the hold.
PAD_GUARD_S = 0.01
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
        jitter_hold: bool = True,
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
        # Without ``jitter_hold`` (audio paced live, in whole frames) an utterance starts at once.
        self._jitter = JitterHold(HOLD_MIN_S, HOLD_MAX_S) if jitter_hold else JitterHold(0.0, 0.0)
        # The utterance being played (or held back): translated frames go out back to back
        # from its first until it ends, and passthrough-only frames never come between them.
        self._talking = False
        self._started = False  # its first frame has been sent
        self._start_at = 0.0  # when its first frame may play (first chunk + hold)
        self._pos0 = 0  # stream position of its first sample
        # The earliest a chunk of it arrived, relative to its audio (arrival minus the audio
        # before it): how late each chunk came is measured from there. None before any.
        self._earliest: float | None = None
        self._dry_at = 0.0  # when the last translated frame sent ends playing
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
        self._arrival(now)
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
            self._dry_at = now
            self._start_at = now  # the listener has waited long enough: no hold
            self._started = False
            self._clear_pending = True
        else:
            self._drop(len(self._buf) - self._backlog_max)

    def _arrival(self, now: float) -> None:
        """Book a translated chunk's arrival: how late it came, and whether it begins an
        utterance (nothing was playing or held, or the last one ran dry before it came)."""
        dry = not self._talking or (self._started and now >= self._dry_at)
        # A chunk just after an utterance ran dry may be its continuation, come too late:
        # counted, so that the next hold covers it.
        if self._earliest is not None and (not dry or now - self._dry_at < self._jitter.max_s):
            offset = now - (self._pos + len(self._buf) - self._pos0) / TWILIO_RATE_HZ
            self._jitter.record(offset - self._earliest, now)
            self._earliest = min(self._earliest, offset)
        if dry:
            self._talking = True
            self._started = False
            self._earliest = now
            self._pos0 = self._pos
            # A part-frame cannot be sent before the chunk completing it arrives: up to a
            # frame more than the jitter itself, and the send margin.
            self._start_at = now + self._jitter.hold_s(FRAME_S + PAD_GUARD_S)

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
            ready = self._translation_ready(now)
            has_pt = len(self._pt) >= FRAME_SAMPLES
            if ready:
                lead = self._max_ahead
            elif has_pt and not self._gap_closed(now):
                # Frames of the passthrough alone are sent just in time, so that when
                # translation arrives Twilio holds at most PASSTHROUGH_LEAD_S of them ahead.
                lead = min(self._max_ahead, PASSTHROUGH_LEAD_S)
            else:
                break
            if self._play_end - now + FRAME_S > lead + _EPS_S:
                break
            translated = self._take_translated() if ready else None
            passthrough = self._take_passthrough() if has_pt else None
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
                self._dry_at = self._play_end
                self._account(now, out)
            elif self._talking and self._started:
                # Translation ran out mid-utterance (the engine fell behind): what comes next
                # starts a new one, held back again.
                self._talking = False
        return out, self.next_wake(now)

    def _translation_ready(self, now: float) -> bool:
        """A translated frame may be sent now (lead permitting)."""
        if len(self._buf) >= FRAME_SAMPLES:
            return self._started or self._play_end >= self._start_at - _EPS_S
        if not len(self._buf):
            return False
        # A part-frame: the utterance's end, if nothing more came by the time it is needed.
        return now >= self._needed_at() - PAD_GUARD_S - _EPS_S

    def _needed_at(self) -> float:
        """When the utterance's next frame must play for it to continue without a gap."""
        return self._dry_at if self._started else self._start_at

    def _gap_closed(self, now: float) -> bool:
        """Mid-utterance, waiting for the next chunk: a passthrough-only frame now would
        become a gap in the translation."""
        return self._talking and self._started and now < self._dry_at - PAD_GUARD_S - _EPS_S

    def _take_translated(self) -> Samples:
        taken = min(len(self._buf), FRAME_SAMPLES)
        frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        frame[:taken] = self._buf[:taken]
        self._buf = self._buf[taken:]
        self._pos += taken
        self._started = True
        if taken < FRAME_SAMPLES:
            self._talking = False  # its padded last frame: the utterance is over
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
        waits: list[float] = []
        if len(self._buf) >= FRAME_SAMPLES:
            held = 0.0
            if not self._started and self._play_end < self._start_at - _EPS_S:
                held = self._start_at - now
            waits.append(max(held, ahead + FRAME_S - self._max_ahead))
        elif len(self._buf):
            waits.append(self._needed_at() - PAD_GUARD_S - now)
        if len(self._pt) >= FRAME_SAMPLES:
            lead = min(self._max_ahead, PASSTHROUGH_LEAD_S)
            wait = ahead + FRAME_S - lead
            if self._talking and self._started:
                wait = max(wait, self._dry_at - PAD_GUARD_S - now)
            waits.append(wait)
        return max(0.0, min(waits)) + 0.001 if waits else None
