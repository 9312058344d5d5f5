"""Outbound audio for one leg: fixed 20 ms μ-law frames, paced against Twilio's play buffer.

Pure logic with the clock passed in, so it is tested without sleeping. Twilio plays what we
send in real time and buffers the rest; we keep its buffer at most ``max_ahead_s`` deep, so a
``clear`` (or dropping stale audio) always has little to undo, while each translated chunk still
leaves at once. Pacing is anchored to a clock estimate of when Twilio's buffer runs dry
(``play_end``), never to ``sleep(0.02)`` in a loop, so it cannot drift.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from bridge.audio import FRAME_MS, TWILIO_FRAME_BYTES, ULAW_SILENCE

FRAME_S = FRAME_MS / 1000
# A trailing part-frame waits for more audio only while Twilio still has this much left to play:
# padding it with silence any earlier could put a gap inside continuous speech, any later could
# leave the listener in a gap before the utterance's last syllable.
PAD_GUARD_S = 0.04
# Float slack so 50 x 20 ms counts as exactly one second.
_EPS_S = 1e-6


@dataclass(frozen=True, slots=True)
class Frame:
    ulaw: bytes


@dataclass(frozen=True, slots=True)
class MarkOut:
    name: str


Outbound = Frame | MarkOut
LatencyObserver = Callable[[str, float], None]


@dataclass(slots=True)
class _Chunk:
    start: int  # stream position (bytes) of the chunk's first sample
    end: int
    received_at: float
    first_sent: bool = False


class Playout:
    """Frames and marks to send, and when. Not thread-safe: the owning leg holds a lock."""

    def __init__(
        self,
        *,
        max_ahead_s: float = 1.0,
        max_backlog_s: float = 10.0,
        observe: LatencyObserver | None = None,
        mark_prefix: str = "m",
    ) -> None:
        self._max_ahead = max_ahead_s
        self._max_backlog = int(max_backlog_s * 1000 / FRAME_MS) * TWILIO_FRAME_BYTES
        self._observe = observe
        self._mark_prefix = mark_prefix
        self._buf = bytearray()
        self._pos = 0  # stream position of _buf[0]
        self._chunks: deque[_Chunk] = deque()
        self._play_end = 0.0
        self._mark_seq = 0
        self.frames_sent = 0
        self.dropped_bytes = 0

    @property
    def backlog_bytes(self) -> int:
        return len(self._buf)

    def buffered_s(self, now: float) -> float:
        """Estimated audio Twilio still holds unplayed."""
        return max(0.0, self._play_end - now)

    def push(self, ulaw: bytes, received_at: float) -> None:
        if not ulaw:
            return
        end = self._pos + len(self._buf) + len(ulaw)
        self._chunks.append(_Chunk(end - len(ulaw), end, received_at))
        self._buf += ulaw
        excess = len(self._buf) - self._max_backlog
        if excess > 0:
            # Stale audio is worth less than staying near-live: drop the oldest, count it.
            del self._buf[:excess]
            self._pos += excess
            self.dropped_bytes += excess
            while self._chunks and self._chunks[0].end <= self._pos:
                self._chunks.popleft()

    def due(self, now: float) -> tuple[list[Outbound], float | None]:
        """What to send at ``now``, and how long until it is worth asking again (None: idle)."""
        out: list[Outbound] = []
        self._play_end = max(self._play_end, now)
        while self._play_end - now + FRAME_S <= self._max_ahead + _EPS_S:
            if len(self._buf) >= TWILIO_FRAME_BYTES:
                frame = bytes(self._buf[:TWILIO_FRAME_BYTES])
            elif self._buf and self._play_end - now <= PAD_GUARD_S:
                frame = bytes(self._buf).ljust(TWILIO_FRAME_BYTES, bytes([ULAW_SILENCE]))
            else:
                break
            taken = min(len(self._buf), TWILIO_FRAME_BYTES)
            del self._buf[:taken]
            self._pos += taken
            self._play_end += FRAME_S
            self.frames_sent += 1
            out.append(Frame(frame))
            self._account(now, out)
        return out, self._next_wake(now)

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
            out.append(MarkOut(f"{self._mark_prefix}{self._mark_seq}"))

    def _next_wake(self, now: float) -> float | None:
        ahead = self._play_end - now
        if len(self._buf) >= TWILIO_FRAME_BYTES:
            return max(0.0, ahead + FRAME_S - self._max_ahead) + 0.001
        if self._buf:
            return max(0.0, ahead - PAD_GUARD_S) + 0.001
        return None
