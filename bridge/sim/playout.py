"""Twilio's outbound playout buffer, simulated on a continuous clock.

Pure and not thread-safe (the media client guards it with its lock); every method takes
``now`` so tests can drive it with a fake clock. Audio plays at 8000 μ-law bytes per second,
starting on arrival when the buffer is empty, else right after what is queued. A mark is due
once everything queued before it has played; ``clear`` drops what has not played yet and makes
every pending mark due at once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from bridge.audio.pcm import TWILIO_RATE_HZ, ULAW_SILENCE


@dataclass(slots=True)
class _Chunk:
    start: float
    data: bytes

    @property
    def end(self) -> float:
        return self.start + len(self.data) / TWILIO_RATE_HZ


class PlayoutBuffer:
    """What a phone leg's listener hears, and when."""

    def __init__(self) -> None:
        self._chunks: list[_Chunk] = []
        self._end = 0.0  # when everything queued so far will have played
        self._marks: deque[tuple[str, float]] = deque()
        self.cleared_bytes = 0

    def enqueue(self, data: bytes, now: float) -> None:
        """Queue received audio for playout."""
        start = max(now, self._end)
        self._chunks.append(_Chunk(start, data))
        self._end = start + len(data) / TWILIO_RATE_HZ

    def add_mark(self, name: str, now: float) -> None:
        """Queue a mark behind the audio received so far."""
        self._marks.append((name, max(now, self._end)))

    def pop_due_marks(self, now: float) -> list[str]:
        """Marks whose audio has played by ``now``, in order."""
        due: list[str] = []
        while self._marks and self._marks[0][1] <= now:
            due.append(self._marks.popleft()[0])
        return due

    def next_mark_due(self) -> float | None:
        """When the next pending mark falls due (None if there is none)."""
        return self._marks[0][1] if self._marks else None

    def clear(self, now: float) -> None:
        """Drop unplayed audio; every pending mark becomes due now."""
        kept: list[_Chunk] = []
        for chunk in self._chunks:
            if chunk.start >= now:
                self.cleared_bytes += len(chunk.data)
                continue
            if chunk.end > now:
                played = round((now - chunk.start) * TWILIO_RATE_HZ)
                self.cleared_bytes += len(chunk.data) - played
                chunk.data = chunk.data[:played]
            kept.append(chunk)
        self._chunks = kept
        self._end = min(self._end, now)
        self._marks = deque((name, now) for name, _due in self._marks)

    def unplayed_s(self, now: float) -> float:
        """Seconds of audio queued but not yet played."""
        return max(0.0, self._end - now)

    def played(self, now: float) -> bytes:
        """Everything the listener has heard by ``now`` (gaps not included)."""
        out = bytearray()
        for chunk in self._chunks:
            if chunk.start >= now:
                break
            out += chunk.data[: round((min(now, chunk.end) - chunk.start) * TWILIO_RATE_HZ)]
        return bytes(out)

    def window(self, start: float, n_bytes: int) -> bytes:
        """The ``n_bytes`` playing from ``start`` on (silence where nothing plays)."""
        out = bytearray([ULAW_SILENCE]) * n_bytes
        stop = start + n_bytes / TWILIO_RATE_HZ
        for chunk in reversed(self._chunks):  # sorted and disjoint: stop at the first past one
            if chunk.start >= stop:
                continue
            if chunk.end <= start:
                break
            src = max(0, round((start - chunk.start) * TWILIO_RATE_HZ))
            dst = max(0, round((chunk.start - start) * TWILIO_RATE_HZ))
            piece = chunk.data[src : src + n_bytes - dst]
            out[dst : dst + len(piece)] = piece
        return bytes(out)
