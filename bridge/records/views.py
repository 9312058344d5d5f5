"""Call records as the API shows them, and a transcript as plain text or WebVTT captions.

Pure: no database, no Flask. The store (bridge/records/store.py) and the live view
(bridge/web/live.py) both build these; bridge/web/api.py serialises them with ``to_json()``. Times
are ISO 8601 in UTC (``2026-05-01T10:00:00.123Z``); offsets are milliseconds from the call's start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bridge.engines.contract import Direction

DIRECTIONS: tuple[Direction, ...] = ("caller_to_agent", "agent_to_caller")
# Who speaks in each direction: the voice tag of a caption, the speaker of a text line.
SPEAKER: dict[Direction, str] = {"caller_to_agent": "caller", "agent_to_caller": "agent"}


def iso_utc(at: datetime | None) -> str | None:
    """``2026-05-01T10:00:00.123Z``; a naive datetime is taken to be UTC already."""
    if at is None:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Segment:
    """One utterance of one direction: what was said, what it became, how late it was heard."""

    direction: Direction
    seq: int
    source_text: str
    translated_text: str
    start_ms: int
    end_ms: int
    delay_ms: int | None  # speech onset → first translated audio the listener heard

    def to_json(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "seq": self.seq,
            "source_text": self.source_text,
            "translated_text": self.translated_text,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "delay_ms": self.delay_ms,
        }


@dataclass(frozen=True, slots=True)
class CallSummary:
    """Who called whom, in which languages, when, and how it ended."""

    call_sid: str  # the caller's CallSid: the call's identity everywhere
    agent_sid: str | None
    caller_number: str
    agent_number: str | None
    dialled_number: str
    caller_language: str
    agent_language: str
    engine: str
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    end_reason: str | None
    end_detail: str
    # In progress right now: from the live view; with several instances, from Redis.
    active: bool = False

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end, or so far for a live call; None when the end is unknown."""
        end = self.ended_at
        if end is None and self.active:
            end = datetime.now(UTC)
        if end is None:
            return None
        return round(max(0.0, (_aware(end) - _aware(self.started_at)).total_seconds()), 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid,
            "agent_sid": self.agent_sid,
            "caller_number": self.caller_number,
            "agent_number": self.agent_number,
            "dialled_number": self.dialled_number,
            "caller_language": self.caller_language,
            "agent_language": self.agent_language,
            "engine": self.engine,
            "started_at": iso_utc(self.started_at),
            "answered_at": iso_utc(self.answered_at),
            "ended_at": iso_utc(self.ended_at),
            "end_reason": self.end_reason,
            "end_detail": self.end_detail,
            "duration_s": self.duration_s,
            "active": self.active,
        }


@dataclass(frozen=True, slots=True)
class CallDetail:
    """A summary with its transcript and the last delay measured in each direction."""

    summary: CallSummary
    segments: tuple[Segment, ...] = ()
    delays: dict[Direction, int | None] = field(
        default_factory=lambda: dict.fromkeys(DIRECTIONS, None)
    )

    def to_json(self) -> dict[str, Any]:
        return {
            **self.summary.to_json(),
            "segments": [s.to_json() for s in self.segments],
            "delays": {d: self.delays.get(d) for d in DIRECTIONS},
        }


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _clock(ms: int, *, hours: bool) -> str:
    seconds, millis = divmod(max(0, ms), 1000)
    minutes, seconds = divmod(seconds, 60)
    if not hours:
        return f"{minutes:02d}:{seconds:02d}"
    hours_, minutes = divmod(minutes, 60)
    return f"{hours_:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def _in_order(detail: CallDetail) -> list[Segment]:
    return sorted(detail.segments, key=lambda s: (s.start_ms, DIRECTIONS.index(s.direction)))


def transcript_text(detail: CallDetail) -> str:
    """One line per segment, in time order: ``[mm:ss] direction: source → translation``."""
    s = detail.summary
    lines = [
        f"# call {s.call_sid} from {s.caller_number} ({s.caller_language}) "
        f"to {s.agent_number or s.dialled_number} ({s.agent_language}), "
        f"started {iso_utc(s.started_at)}"
    ]
    for seg in _in_order(detail):
        # Minutes keep counting past an hour ([75:02]): one column, still sortable by eye.
        lines.append(
            f"[{_clock(seg.start_ms, hours=False)}] {seg.direction}: "
            f"{_one_line(seg.source_text)} → {_one_line(seg.translated_text)}"
        )
    return "\n".join(lines) + "\n"


def transcript_vtt(detail: CallDetail) -> str:
    """WebVTT captions: one cue per segment, the translation voiced by its direction, with the
    source text beneath it (what a viewer of a recording would want to read)."""
    blocks = ["WEBVTT", f"NOTE call {detail.summary.call_sid}"]
    for seg in _in_order(detail):
        end_ms = max(seg.end_ms, seg.start_ms + 1)  # a cue must not end before it starts
        cue = (
            f"{SPEAKER[seg.direction]}-{seg.seq}\n"
            f"{_clock(seg.start_ms, hours=True)} --> {_clock(end_ms, hours=True)}\n"
            f"<v {seg.direction}>{_vtt_text(seg.translated_text)}</v>"
        )
        if seg.source_text:
            cue += f"\n({_vtt_text(seg.source_text)})"
        blocks.append(cue)
    return "\n\n".join(blocks) + "\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _vtt_text(text: str) -> str:
    # A blank line would end the cue and "-->" start a timing line: text goes on one line,
    # and <, > and & (cue markup) are escaped, which also breaks any "-->".
    return _one_line(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
