"""One direction's transcript, cut into segments (utterances) as fragments stream in.

The engine streams source and translated text as small deltas with no notion of sentences or
turns. A segment closes after a pause (no fragment for SEGMENT_GAP_MS), at the end of a
sentence once it has some length, or when it grows too long; the call's end closes the last.
Each segment carries the delay measured for it: from the speaker's speech onset to the first
translated audio the listener heard (Twilio ``mark`` echoes).

Numbers are masked here, before anything leaves (bridge/calls/redact.py): a closed segment's
whole text, and the live fragments, which hold back a trailing number until the next fragment
shows it ended, or a pause (SEGMENT_GAP_MS) or the call's end releases it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.calls.events import SegmentClosed
from bridge.calls.redact import FragmentRedactor, Redactor
from bridge.engines.contract import Direction, TextKind

SEGMENT_GAP_MS = 1500
SENTENCE_MIN_MS = 4000
SEGMENT_MAX_MS = 20_000
_SENTENCE_END = (".", "?", "!", "。", "？", "！", "…")
# Text kept per segment: a runaway stream must not grow one row without bound.
MAX_SEGMENT_CHARS = 4000


@dataclass(slots=True)
class _Open:
    start_ms: int
    last_ms: int
    source: list[str] = field(default_factory=list)
    translated: list[str] = field(default_factory=list)
    chars: int = 0
    delay_ms: int | None = None


class DirectionTranscript:
    """Not thread-safe: the call serialises access (its lock)."""

    def __init__(
        self, call_sid: str, direction: Direction, redactor: Redactor | None = None
    ) -> None:
        self._call_sid = call_sid
        self._direction = direction
        self._redactor = redactor or Redactor()
        self._live: dict[TextKind, FragmentRedactor] = {
            "source": FragmentRedactor(self._redactor),
            "translation": FragmentRedactor(self._redactor),
        }
        self._seq = 0
        self._open: _Open | None = None
        self._pending_delay: int | None = None

    def add(self, kind: TextKind, text: str, offset_ms: int) -> SegmentClosed | None:
        """Add a fragment; returns the previous segment if this fragment starts a new one."""
        closed = None
        seg = self._open
        if seg is not None and offset_ms - seg.last_ms >= SEGMENT_GAP_MS:
            closed = self._close()
            seg = None
        if seg is None:
            seg = self._open = _Open(start_ms=offset_ms, last_ms=offset_ms)
            seg.delay_ms, self._pending_delay = self._pending_delay, None
        if seg.chars < MAX_SEGMENT_CHARS:
            (seg.source if kind == "source" else seg.translated).append(text)
            seg.chars += len(text)
        seg.last_ms = offset_ms
        if closed is None and self._ends_here(seg, kind, text):
            closed = self._close()
        return closed

    def live(self, kind: TextKind, text: str, offset_ms: int) -> str:
        """What of this fragment the live view may show now, masked ("" while held back)."""
        return self._live[kind].push(text, offset_ms)

    def release_held(self, now_ms: int | None = None) -> list[tuple[TextKind, str]]:
        """Held live text whose pause has lasted SEGMENT_GAP_MS (all of it when ``now_ms`` is
        None: the call is ending), masked."""
        released: list[tuple[TextKind, str]] = []
        for kind, stream in self._live.items():
            if stream.held and (now_ms is None or now_ms - stream.last_ms >= SEGMENT_GAP_MS):
                released.append((kind, stream.flush()))
        return released

    def note_delay(self, delay_ms: int) -> None:
        """The delay measured for the utterance being translated now (first one wins)."""
        if self._open is not None and self._open.delay_ms is None:
            self._open.delay_ms = delay_ms
        elif self._open is None:
            self._pending_delay = delay_ms

    def tick(self, now_ms: int) -> SegmentClosed | None:
        """Close the open segment once the pause after it is long enough."""
        if self._open is not None and now_ms - self._open.last_ms >= SEGMENT_GAP_MS:
            return self._close()
        return None

    def flush(self) -> SegmentClosed | None:
        """Close whatever is open (the call is ending)."""
        return self._close() if self._open is not None else None

    @staticmethod
    def _ends_here(seg: _Open, kind: TextKind, text: str) -> bool:
        length = seg.last_ms - seg.start_ms
        if length >= SEGMENT_MAX_MS:
            return True
        sentence = kind == "translation" and text.rstrip().endswith(_SENTENCE_END)
        return sentence and length >= SENTENCE_MIN_MS

    def _close(self) -> SegmentClosed:
        seg = self._open
        assert seg is not None
        self._open = None
        self._seq += 1
        return SegmentClosed(
            call_sid=self._call_sid,
            direction=self._direction,
            seq=self._seq,
            source_text=self._redactor.redact("".join(seg.source).strip()),
            translated_text=self._redactor.redact("".join(seg.translated).strip()),
            start_ms=seg.start_ms,
            end_ms=seg.last_ms,
            delay_ms=seg.delay_ms,
        )
