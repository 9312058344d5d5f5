"""The load benchmark's arithmetic and reports, pure: no sockets, no processes, no clock.

``bench/load.py`` records times and frames at the stand-ins (``bench/load_peers.py``); this
turns them into the figures the issue asks for (added latency per direction, lost frames,
inserted silences, CPU, threads and memory per call), compares two trees run side by side, and
writes the table as Markdown and JSON. Tested on made-up data in tests/bench/.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

FRAME_S = 0.020
SAMPLES_24K_PER_FRAME = 480
SAMPLES_24K_PER_8K_FRAME = 3 * 160
# The bridge sends a translated frame only while Twilio holds at most this much audio ahead
# of it, with the passthrough on (LEAD_WITH_PASSTHROUGH_S in the bridge's leg module; the same
# in the baseline 185dac9). Waiting for that is pacing by design, not added latency.
LEAD_S = 0.1
# Deltas sent this long before the window ends must have all their frames heard by its end.
SETTLE_S = 0.5
# Late: Twilio would have played more than one frame of silence before the frame arrived.
LATE_GAP_S = 0.020

# The goals: the first three break a call (the step series stops when every tree
# misses them); the others are reported against their goal.
TARGET_P99_MS = 20.0
GOAL_CPU_S_PER_CALL_MIN = 0.4
GOAL_RSS_MIB_PER_CALL = 1.0
GOAL_THREADS_PER_CALL = 0.0
# The generator runs out of room above this share of its core: its own figures then limit.
GENERATOR_SATURATED = 0.8
# The generator sending frames later than this (p99) means its core was too busy (other work
# on the machine): the row's latencies are then not the bridge's alone.
GENERATOR_LATE_MS = 5.0


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (nearest rank below), NaN when there is nothing to rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- inbound: Twilio frame in → append sent ----------------------------------------------------


def inbound_latencies(
    sent_at: Sequence[float], appends: Sequence[tuple[float, int]], start: float, end: float
) -> tuple[list[float], list[float], int, int]:
    """(own, raw) latencies of the appends received in [start, end), frames lost, frames owed.

    The bridge upsamples every 8 kHz frame to exactly 480 samples, so an append that brings the
    session's total to ``S`` samples carries frames up to ``S // 480 - 1``: own = arrival minus
    that last frame's send time; raw = minus the append's first frame's (the 100 ms batching
    on top)."""
    own, raw = [], []
    total = 0
    for at, samples in appends:
        first = total // SAMPLES_24K_PER_8K_FRAME
        total += samples
        last = total // SAMPLES_24K_PER_8K_FRAME - 1
        if start <= at < end and 0 <= last < len(sent_at):
            own.append(at - sent_at[last])
            raw.append(at - sent_at[first])
    covered = sum(s for at, s in appends if at < end) // SAMPLES_24K_PER_8K_FRAME
    owed = sum(1 for t in sent_at if t < end - SETTLE_S)
    return own, raw, max(0, owed - covered), owed


# -- outbound: engine delta in → its first frame out ---------------------------------------------


@dataclass
class Heard:
    """What one listener received, frame by frame (the simulated Twilio side)."""

    at: list[float] = field(default_factory=list)  # arrival of every media frame
    loud: list[bool] = field(default_factory=list)  # it carries translation (the loud tone)
    holed: list[bool] = field(default_factory=list)  # it holds a run of exact zeros
    # When Twilio's buffer would have run dry just before this frame arrived (absolute time):
    # how far ahead of a delta's arrival audio was already queued.
    play_end_before: list[float] = field(default_factory=list)


def _first_heard(heard: Heard) -> list[int]:
    """Index into ``heard`` of each translated frame, in order."""
    return [i for i, loud in enumerate(heard.loud) if loud]


@dataclass
class Outbound:
    """Engine → listener figures of one direction (seconds, frames)."""

    out: list[float] = field(default_factory=list)
    start_out: list[float] = field(default_factory=list)
    start_played: list[float] = field(default_factory=list)
    lost: int = 0
    owed: int = 0


def outbound_latencies(
    deltas: Sequence[tuple[float, int, bool]], heard: Heard, start: float, end: float
) -> Outbound:
    """Latencies of the deltas sent in [start, end), frames lost and owed.

    ``deltas``: (time sent, samples at 24 kHz, begins an utterance). For each delta, its first
    frame's arrival minus the delta's, minus the pacing the bridge does on purpose (Twilio
    already held more than ``LEAD_S`` minus a frame ahead of it: it waits until that plays).
    A delta that continues an utterance goes to ``out`` (the issue's added latency); one that
    begins an utterance to ``start_out``: by design the bridge holds an utterance's first
    frame back 40-120 ms of *play* time (bridge/audio/jitter.py: the frame may be sent once
    Twilio's queue, passthrough included, reaches the hold's end, so part of the hold is spent
    queued at Twilio) and reports no figure for it; so starts are shown apart, and with them
    ``start_played``, delta sent → when Twilio would start playing that frame (the whole hold,
    as the listener hears it)."""
    index = _first_heard(heard)
    result = Outbound()
    before = 0
    owed = 0
    for sent, samples, begins in deltas:
        first = before // SAMPLES_24K_PER_FRAME
        before += samples
        if sent < end - SETTLE_S:
            owed = before // SAMPLES_24K_PER_FRAME
        if not (start <= sent < end) or first >= len(index):
            continue
        i = index[first]
        queued = heard.play_end_before[i] - sent if i < len(heard.play_end_before) else 0.0
        pacing = max(0.0, queued - (LEAD_S - FRAME_S))
        if begins:
            result.start_out.append(heard.at[i] - sent)
            result.start_played.append(max(heard.at[i], heard.play_end_before[i]) - sent)
        else:
            result.out.append(heard.at[i] - sent - pacing)
    got = sum(1 for i in index if heard.at[i] < end)
    result.lost, result.owed = max(0, owed - got), owed
    return result


@dataclass
class Silences:
    """Dropouts inside translated speech: the bridge's (runs, frames), and runs where the
    engine stand-in itself sent the audio after the gap began (not the bridge's doing)."""

    runs: int = 0
    frames: int = 0
    engine_late: int = 0


def inserted_silences(heard: Heard, deltas: Sequence[tuple[float, int, bool]]) -> Silences:
    """Dropouts the bridge put inside translated speech.

    ``deltas`` (time sent, samples, begins an utterance) say what the engine stand-in sent:
    utterances of translation without a gap. The listener's translated frames are counted off
    against them; a received frame without translation after an utterance's first frame and
    before its last is a frame of silence the engine's output did not have (a run of them is
    one dropout), and so is a translated frame holding a run of exact zeros, unless it is the
    utterance's last (its padded end). A run counts as the bridge's only if the delta carrying
    the frame after it was sent at least a frame before the run began: the bridge had the
    audio and sent something else; otherwise the engine was late (counted apart)."""
    bounds: list[tuple[int, int]] = []
    sent_of: list[float] = []  # per translated frame: when its delta was sent
    total = 0
    for sent, samples, begins in deltas:
        before = total // SAMPLES_24K_PER_FRAME
        total += samples
        frames = total // SAMPLES_24K_PER_FRAME - before
        if begins or not bounds:
            bounds.append((before, before))
        bounds[-1] = (bounds[-1][0], before + frames)
        sent_of += [sent] * frames
    result = Silences()
    seen = 0  # translated frames heard so far
    which = 0  # the utterance those belong to
    run: list[float] = []  # arrival of each frame of the current run
    for at, loud, holed in zip(heard.at, heard.loud, heard.holed, strict=True):
        while which < len(bounds) and seen >= bounds[which][1]:
            which += 1
        inside = which < len(bounds) and bounds[which][0] < seen < bounds[which][1]
        if loud:
            if run:
                if seen < len(sent_of) and sent_of[seen] <= run[0] - FRAME_S:
                    result.runs += 1
                    result.frames += len(run)
                else:
                    result.engine_late += 1
                run = []
            last_of_utterance = which < len(bounds) and seen == bounds[which][1] - 1
            seen += 1
            if holed and not last_of_utterance:
                result.runs += 1
                result.frames += 1
        elif inside:
            run.append(at)
        else:
            run = []
    return result


def late_frames(
    heard: Heard, dry_s: Sequence[float], start: float, end: float
) -> tuple[int, float]:
    """Frames arriving after the listener's buffer had been empty > LATE_GAP_S, and the
    longest such silence, among those heard in [start, end)."""
    dry = [d for t, d in zip(heard.at, dry_s, strict=True) if start <= t < end]
    return sum(1 for d in dry if d > LATE_GAP_S), max(dry, default=0.0)


# -- one run's result and the table --------------------------------------------------------------


@dataclass
class Result:
    tree: str  # "current" or "baseline"
    commit: str
    n: int
    round: int
    lat_in_own: list[float]
    lat_in_raw: list[float]
    lat_out: list[float]
    start_out: list[float]
    start_played: list[float]
    lost: int
    expected: int
    silences: int
    silent_frames: int
    engine_late_gaps: int
    late: int
    heard: int  # frames received in the window, both listeners
    max_gap_ms: float
    cpu_per_call_min: float
    rss_per_call_mib: float
    threads: int
    idle_threads: int
    gen_cpu_share: float
    gen_late_p99_ms: float
    load: float

    @property
    def threads_per_call(self) -> float:
        return (self.threads - self.idle_threads) / max(self.n, 1)

    def broke(self) -> list[str]:
        """What of the call-breaking target this run missed (empty: it held)."""
        missed = []
        if pct(self.lat_in_own, 0.99) * 1000 > TARGET_P99_MS:
            missed.append("in p99")
        if pct(self.lat_out, 0.99) * 1000 > TARGET_P99_MS:
            missed.append("out p99")
        if self.lost:
            missed.append("lost")
        if self.silences:
            missed.append("silences")
        return missed

    def goals_missed(self) -> list[str]:
        missed = self.broke()
        if self.cpu_per_call_min > GOAL_CPU_S_PER_CALL_MIN:
            missed.append("CPU")
        if self.rss_per_call_mib > GOAL_RSS_MIB_PER_CALL:
            missed.append("RSS")
        if self.threads_per_call > GOAL_THREADS_PER_CALL:
            missed.append("threads")
        return missed

    def saturated(self) -> bool:
        return self.gen_cpu_share > GENERATOR_SATURATED

    def summary(self) -> dict[str, object]:
        """The row as numbers (milliseconds for latencies), for the JSON file."""
        row: dict[str, object] = {k: v for k, v in asdict(self).items() if not isinstance(v, list)}
        for name in ("lat_in_own", "lat_in_raw", "lat_out", "start_out", "start_played"):
            values: list[float] = getattr(self, name)
            row[name] = {
                "count": len(values),
                "p50_ms": _ms(pct(values, 0.5)),
                "p99_ms": _ms(pct(values, 0.99)),
            }
        row["threads_per_call"] = self.threads_per_call
        row["broke"] = self.broke()
        row["goals_missed"] = self.goals_missed()
        row["generator_saturated"] = self.saturated()
        return row


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(1000 * seconds, 2)


def _p(values: list[float]) -> str:
    def one(q: float) -> str:
        v = pct(values, q)
        return "-" if math.isnan(v) else f"{1000 * v:.1f}"

    return f"{one(0.5)} / {one(0.99)}"


LEGEND = """\
**in**: a Twilio frame sent → the append carrying it received by the engine stand-in, for the
append's last frame (the bridge's own processing; **in raw**: for its first frame, i.e. plus the
deliberate 100 ms batching). **out**: an engine delta sent → its first frame received, for deltas
that continue an utterance, minus any wait while Twilio already held more than the 100 ms lead
(pacing by design). **start out**: a delta that begins an utterance → its first frame
received, and **start played**: → when Twilio would begin to play it. The current bridge holds
an utterance's first frame back 40-120 ms of play time on purpose (the jitter hold; the
baseline has none), mostly by queuing passthrough ahead of it, so starts are shown apart and
not in out. **lost**: frames sent but never appended, or translated but never heard (frames
are matched to deltas by count, so where frames were lost out and start are not meaningful).
**silences**: dropouts the bridge inserted inside translated speech the stand-in sent without
a gap, while it held the audio (runs / frames; in brackets, gaps where the stand-in itself sent
late, e.g. because the bridge's appends came late).
**late**: frames before which the listener's simulated Twilio buffer had been empty > 20 ms.
**CPU**: the gunicorn worker's CPU seconds per call-minute; **RSS** and **threads** per call
above the idle worker (/proc). **gen**: the generator's CPU share of its own core and its send
lateness p99 (SATURATED above 80 % of its core; LATE above 5 ms p99: its core was busy with
other work, so the row is not the bridge's alone). **missed**: goals missed (p99 ≤ 20 ms each
way, nothing lost, no silences, CPU ≤ 0.4 s per call-minute, RSS ≤ 1 MiB and no thread per
call)."""

TABLE_HEAD = (
    "| tree | N | in p50 / p99 ms | in raw p50 / p99 ms | out p50 / p99 ms "
    "| start out p50 / p99 ms | start played p50 / p99 ms "
    "| lost / expected | silences runs / frames | late | CPU s per call-min | RSS MiB per call "
    "| threads (idle) | threads per call | gen CPU / late p99 ms | load | missed |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
    "| ---: | ---: | ---: | --- |"
)


def row(r: Result) -> str:
    gen = f"{r.gen_cpu_share:.2f} / {r.gen_late_p99_ms:.1f}"
    if r.saturated():
        gen += " SATURATED"
    elif r.gen_late_p99_ms > GENERATOR_LATE_MS:
        gen += " LATE"
    return (
        f"| {r.tree} {r.commit} r{r.round} | {r.n} | {_p(r.lat_in_own)} | {_p(r.lat_in_raw)} "
        f"| {_p(r.lat_out)} | {_p(r.start_out)} | {_p(r.start_played)} "
        f"| {r.lost} / {r.expected} | {r.silences} / {r.silent_frames} ({r.engine_late_gaps}) "
        f"| {r.late} | {r.cpu_per_call_min:.2f} "
        f"| {r.rss_per_call_mib:.2f} | {r.threads} ({r.idle_threads}) "
        f"| {r.threads_per_call:.2f} | {gen} | {r.load:.2f} | {', '.join(r.goals_missed())} |"
    )


RATIO_HEAD = (
    "| N | CPU per call-min | in p99 | out p99 | start played p99 | RSS per call | threads |\n"
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def _ratio(new: float, old: float) -> str:
    if math.isnan(new) or math.isnan(old) or old == 0:
        return "-"
    return f"{new / old:.2f}"


def ratio_row(n: int, current: Sequence[Result], baseline: Sequence[Result]) -> str:
    """current / baseline at ``n``, over every round of each (latencies pooled, the rest
    averaged): below 1 means the current tree does better."""

    def pooled(results: Sequence[Result], name: str) -> float:
        return pct([v for r in results for v in getattr(r, name)], 0.99)

    def mean(results: Sequence[Result], name: str) -> float:
        return sum(float(getattr(r, name)) for r in results) / len(results)

    cells = [
        _ratio(mean(current, "cpu_per_call_min"), mean(baseline, "cpu_per_call_min")),
        _ratio(pooled(current, "lat_in_own"), pooled(baseline, "lat_in_own")),
        _ratio(pooled(current, "lat_out"), pooled(baseline, "lat_out")),
        _ratio(pooled(current, "start_played"), pooled(baseline, "start_played")),
        _ratio(mean(current, "rss_per_call_mib"), mean(baseline, "rss_per_call_mib")),
        _ratio(mean(current, "threads"), mean(baseline, "threads")),
    ]
    return f"| {n} | " + " | ".join(cells) + " |"


def ratio_table(results: Sequence[Result]) -> str:
    """The ratios current / baseline for every N both trees ran (empty without a baseline)."""
    lines = []
    for n in sorted({r.n for r in results}):
        current = [r for r in results if r.n == n and r.tree == "current"]
        baseline = [r for r in results if r.n == n and r.tree == "baseline"]
        if current and baseline:
            lines.append(ratio_row(n, current, baseline))
    return "\n".join([RATIO_HEAD, *lines]) if lines else ""


def markdown(meta: dict[str, object], results: Sequence[Result]) -> str:
    """The whole report: what ran where, the legend, every run, the ratios."""
    lines = [f"# Load benchmark, {meta['date']}", ""]
    lines += [f"- {key}: `{value}`" for key, value in meta.items() if key != "date"]
    lines += ["", LEGEND, "", TABLE_HEAD, *[row(r) for r in results]]
    ratios = ratio_table(results)
    if ratios:
        lines += ["", "Ratios current / baseline (below 1: the current tree does better):", ""]
        lines += [ratios]
    return "\n".join(lines) + "\n"


def write_results(base: Path, meta: dict[str, object], results: Sequence[Result]) -> list[Path]:
    """``base``.json and ``base``.md; returns both paths."""
    base.parent.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, "runs": [r.summary() for r in results]}
    json_path, md_path = base.with_suffix(".json"), base.with_suffix(".md")
    json_path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    md_path.write_text(markdown(meta, results))
    return [json_path, md_path]
