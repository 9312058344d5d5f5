"""The load benchmark's arithmetic on made-up recordings: what it calls a dropout, a latency, a
lost frame or a missed goal, and the result files it writes (bench/load_stats.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.load_peers import media_payload
from bench.load_stats import (
    Heard,
    Result,
    Silences,
    inbound_latencies,
    inserted_silences,
    late_frames,
    outbound_latencies,
    pct,
    ratio_table,
    row,
    write_results,
)

DELTA = 2400  # 100 ms of 24 kHz audio: five 20 ms frames


def heard_of(pattern: str, every_s: float = 0.02) -> Heard:
    """``T``: a translated frame, ``h``: a translated frame holding a run of zeros, ``.``: a
    frame without translation (the passthrough alone); one every ``every_s``, each arriving as
    the previous one would have finished playing."""
    heard = Heard()
    for i, c in enumerate(pattern):
        heard.at.append(i * every_s)
        heard.loud.append(c in "Th")
        heard.holed.append(c == "h")
        heard.play_end_before.append(i * every_s)
    return heard


def deltas_of(*utterances: int, sent_s: float = -1.0) -> list[tuple[float, int, bool]]:
    """Utterances of so many 100 ms deltas, all sent at ``sent_s`` (before anything is heard)."""
    return [(sent_s, DELTA, i == 0) for count in utterances for i in range(count)]


def test_translation_heard_as_sent_has_no_silences() -> None:
    heard = heard_of("..TTTTT....TTTTT..")
    assert inserted_silences(heard, deltas_of(1, 1)) == Silences(0, 0, 0)


def test_a_gap_inside_an_utterance_is_one_dropout_per_run() -> None:
    heard = heard_of(".TT..TTT.T.TTTT")
    # utterance 1: TT..TTT (one run of 2 frames); between utterances "." is not counted;
    # utterance 2: T.TTTT (one run of 1 frame)
    assert inserted_silences(heard, deltas_of(1, 1)) == Silences(2, 3, 0)


def test_a_gap_the_engine_caused_is_not_the_bridges() -> None:
    heard = heard_of("TTTTT..TTTTT")  # the gap begins at 0.100 s
    deltas = [(-1.0, DELTA, True), (0.095, DELTA, False)]  # the second came only 5 ms before
    assert inserted_silences(heard, deltas) == Silences(0, 0, 1)
    deltas = [(-1.0, DELTA, True), (0.060, DELTA, False)]  # the bridge had it 40 ms before
    assert inserted_silences(heard, deltas) == Silences(1, 2, 0)


def test_zeros_inside_a_translated_frame_count_unless_it_ends_the_utterance() -> None:
    assert inserted_silences(heard_of("TThTT"), deltas_of(1)) == Silences(1, 1, 0)
    assert inserted_silences(heard_of("TTTTh"), deltas_of(1)) == Silences(0, 0, 0)


def test_inbound_latency_is_measured_from_the_last_and_first_frame_an_append_carries() -> None:
    sent_at = [0.02 * i for i in range(10)]
    appends = [(0.083, DELTA), (0.184, DELTA)]  # frames 0-4, then 5-9
    own, raw, lost, owed = inbound_latencies(sent_at, appends, 0.0, 1.0)
    assert own == pytest.approx([0.003, 0.004])
    assert raw == pytest.approx([0.083, 0.084])
    assert (lost, owed) == (0, 10)


def test_frames_never_appended_are_lost() -> None:
    sent_at = [0.02 * i for i in range(10)]
    _, _, lost, owed = inbound_latencies(sent_at, [(0.083, DELTA)], 0.0, 1.0)
    assert (lost, owed) == (5, 10)


def test_outbound_splits_utterance_starts_from_their_continuation_and_removes_pacing() -> None:
    heard = Heard()
    # Delta 1 (starts an utterance) sent at 0.0; its first frame arrives at 0.010 and Twilio
    # already holds passthrough until 0.050, so it plays then (the hold).
    # Delta 2 sent at 0.100; its first frame arrives at 0.130 while Twilio holds audio until
    # 0.200: 100 ms ahead, 20 ms beyond the lead less a frame, so 20 ms of pacing by design.
    for i in range(10):
        heard.at.append(0.010 + 0.02 * i if i < 5 else 0.130 + 0.02 * (i - 5))
        heard.loud.append(True)
        heard.holed.append(False)
        heard.play_end_before.append(0.050 if i == 0 else (0.200 if i == 5 else 0.0))
    got = outbound_latencies([(0.0, DELTA, True), (0.100, DELTA, False)], heard, 0.0, 1.0)
    assert got.start_out == pytest.approx([0.010])
    assert got.start_played == pytest.approx([0.050])
    assert got.out == pytest.approx([0.010])  # 30 ms after the delta, less 20 ms of pacing
    assert (got.lost, got.owed) == (0, 10)


def test_translated_frames_never_heard_are_lost() -> None:
    heard = heard_of("TTT")
    got = outbound_latencies([(0.0, DELTA, True)], heard, 0.0, 1.0)
    assert (got.lost, got.owed) == (2, 5)


def test_late_frames_are_those_after_the_buffer_ran_dry() -> None:
    heard = heard_of("TTTT")
    late, longest = late_frames(heard, [0.0, 0.005, 0.030, 0.0], 0.0, 1.0)
    assert late == 1 and longest == pytest.approx(0.030)


def test_pct_is_nearest_rank_and_nan_when_empty() -> None:
    assert pct([3.0, 1.0, 2.0, 4.0], 0.5) == 3.0
    assert pct([float(i) for i in range(100)], 0.99) == 99.0
    assert math.isnan(pct([], 0.5))


def result(tree: str, cpu: float, out_s: float, **changes: object) -> Result:
    base = Result(
        tree=tree,
        commit="abc1234",
        n=10,
        round=1,
        lat_in_own=[0.002] * 99 + [0.005],
        lat_in_raw=[0.08] * 100,
        lat_out=[out_s] * 100,
        start_out=[0.01],
        start_played=[0.05],
        lost=0,
        expected=1000,
        silences=0,
        silent_frames=0,
        engine_late_gaps=0,
        late=0,
        heard=500,
        max_gap_ms=0.0,
        cpu_per_call_min=cpu,
        rss_per_call_mib=0.5,
        threads=24,
        idle_threads=24,
        gen_cpu_share=0.3,
        gen_late_p99_ms=1.0,
        load=1.5,
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_what_breaks_a_call_and_what_misses_a_goal() -> None:
    assert result("current", 0.3, 0.004).goals_missed() == []
    slow = result("current", 2.0, 0.030, silences=1, threads=44)
    assert slow.broke() == ["out p99", "silences"]
    assert slow.goals_missed() == ["out p99", "silences", "CPU", "threads"]
    assert slow.threads_per_call == 2.0


def test_a_saturated_generator_is_flagged_in_its_row() -> None:
    assert "SATURATED" in row(result("current", 0.3, 0.004, gen_cpu_share=0.9))
    assert "SATURATED" not in row(result("current", 0.3, 0.004))
    assert "LATE" in row(result("current", 0.3, 0.004, gen_late_p99_ms=50.0))


def test_ratios_compare_the_trees_at_each_n() -> None:
    runs = [result("baseline", 4.0, 0.010), result("current", 1.0, 0.005)]
    table = ratio_table(runs).splitlines()
    assert table[-1] == "| 10 | 0.25 | 1.00 | 0.50 | 1.00 | 1.00 | 1.00 |"
    assert ratio_table([result("current", 1.0, 0.005)]) == ""


def test_results_are_written_as_json_and_markdown(tmp_path: Path) -> None:
    runs = [result("baseline", 4.0, 0.010), result("current", 1.0, 0.005, lat_out=[])]
    meta: dict[str, object] = {"date": "2026-12-05 10:00 UTC", "command": "bench/load.py"}
    json_path, md_path = write_results(tmp_path / "load-2026-12-05", meta, runs)
    data = json.loads(json_path.read_text())
    assert data["meta"] == meta
    assert [r["tree"] for r in data["runs"]] == ["baseline", "current"]
    assert data["runs"][0]["lat_out"] == {"count": 100, "p50_ms": 10.0, "p99_ms": 10.0}
    assert data["runs"][1]["lat_out"]["p99_ms"] is None  # nothing measured: not a number
    assert data["runs"][0]["goals_missed"] == ["CPU"]
    text = md_path.read_text()
    assert "| baseline abc1234 r1 | 10 |" in text and "Ratios current / baseline" in text


def test_the_generator_finds_a_media_payload_without_parsing_json() -> None:
    # The text both the current bridge and the baseline send (media_messages).
    text = '{"event":"media","streamSid":"MZ1","media":{"payload":"//79/A=="}}'
    assert media_payload(text) == "//79/A=="
    assert media_payload('{"event":"mark","streamSid":"MZ1","mark":{"name":"a1"}}') is None
    assert media_payload('{"event": "media", "media": {"payload": "AA=="}}') is None  # parsed
