"""Transcript segments: pauses, sentence ends and length cut the stream of deltas."""

from __future__ import annotations

from bridge.calls.transcript import SEGMENT_GAP_MS, SEGMENT_MAX_MS, DirectionTranscript


def test_a_pause_closes_a_segment_with_both_texts_and_its_delay() -> None:
    t = DirectionTranscript("CA1", "caller_to_agent")
    assert t.add("source", "Hola, ", 1000) is None
    t.note_delay(900)
    assert t.add("translation", "Hello, ", 1400) is None
    assert t.add("source", "buenos días", 1600) is None
    assert t.add("translation", "good morning", 2000) is None
    assert t.tick(2000 + SEGMENT_GAP_MS - 1) is None
    closed = t.tick(2000 + SEGMENT_GAP_MS)
    assert closed is not None
    assert (closed.seq, closed.source_text, closed.translated_text) == (
        1,
        "Hola, buenos días",
        "Hello, good morning",
    )
    assert (closed.start_ms, closed.end_ms, closed.delay_ms) == (1000, 2000, 900)
    assert t.flush() is None


def test_the_next_fragment_after_a_pause_closes_the_last_segment() -> None:
    t = DirectionTranscript("CA1", "agent_to_caller")
    t.add("translation", "uno", 0)
    closed = t.add("translation", "dos", SEGMENT_GAP_MS + 10)
    assert closed is not None and closed.translated_text == "uno"
    last = t.flush()
    assert last is not None and (last.seq, last.translated_text) == (2, "dos")


def test_sentence_end_and_length_close_long_speech() -> None:
    t = DirectionTranscript("CA1", "caller_to_agent")
    t.add("translation", "A first sentence", 0)
    assert t.add("translation", " ends here.", 1000) is None  # too short to cut yet
    assert t.add("translation", " Then more", 2200) is None
    assert t.add("translation", " and more", 3200) is None
    closed = t.add("translation", " and this one ends too.", 4200)
    assert closed is not None and closed.end_ms == 4200
    start = 10_000
    result = None
    for i in range(0, SEGMENT_MAX_MS + 1000, 500):
        result = t.add("source", "bla ", start + i) or result
    assert result is not None and result.end_ms - result.start_ms >= SEGMENT_MAX_MS


def test_delay_measured_before_the_text_arrives_belongs_to_the_next_segment() -> None:
    t = DirectionTranscript("CA1", "caller_to_agent")
    t.note_delay(1200)
    t.add("translation", "Hi", 500)
    closed = t.flush()
    assert closed is not None and closed.delay_ms == 1200
