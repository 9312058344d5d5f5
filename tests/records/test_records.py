"""Call records as JSON, and transcripts as text and WebVTT (bridge/records/views.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from bridge.records.views import (
    CallDetail,
    CallSummary,
    Segment,
    iso_utc,
    transcript_text,
    transcript_vtt,
)
from tests.call_events import T0


def summary(**changes: Any) -> CallSummary:
    base = CallSummary(
        call_sid="CA01",
        agent_sid=None,
        caller_number="+34911222333",
        agent_number=None,
        dialled_number="+15550002222",
        caller_language="es",
        agent_language="en",
        engine="relay",
        started_at=T0,
        answered_at=None,
        ended_at=None,
        end_reason=None,
        end_detail="",
    )
    return replace(base, **changes)


def test_times_are_utc_with_milliseconds() -> None:
    assert iso_utc(None) is None
    assert iso_utc(T0) == "2026-05-01T10:00:00.123Z"
    assert iso_utc(T0.astimezone(timezone(timedelta(hours=2)))) == "2026-05-01T10:00:00.123Z"
    assert iso_utc(T0.replace(tzinfo=None)) == "2026-05-01T10:00:00.123Z"


def test_duration_is_known_once_ended_or_while_active() -> None:
    assert summary().duration_s is None  # an open record of a call not live here
    assert summary(ended_at=T0 + timedelta(seconds=61, milliseconds=260)).duration_s == 61.3
    live = summary(started_at=datetime.now(UTC) - timedelta(seconds=3), active=True)
    assert live.duration_s is not None and 2.9 <= live.duration_s < 10
    body = CallDetail(summary()).to_json()
    assert body["segments"] == [] and body["delays"] == {
        "caller_to_agent": None,
        "agent_to_caller": None,
    }


def test_transcripts_put_segments_in_time_order_and_keep_cues_well_formed() -> None:
    detail = CallDetail(
        summary(),
        (
            Segment("agent_to_caller", 1, "Fine.", "Bien.", 3_725_000, 3_726_500, None),
            Segment("caller_to_agent", 1, "a\n\nb", "x & y", 1000, 1000, 400),
        ),
    )
    assert transcript_text(detail).splitlines()[1:] == [
        "[00:01] caller_to_agent: a b → x & y",
        "[62:05] agent_to_caller: Fine. → Bien.",
    ]
    vtt = transcript_vtt(detail)
    assert "00:00:01.000 --> 00:00:01.001\n<v caller_to_agent>x &amp; y</v>\n(a b)" in vtt
    assert "01:02:05.000 --> 01:02:06.500\n<v agent_to_caller>Bien.</v>" in vtt
