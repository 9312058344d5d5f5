"""Soak: calls with injected engine faults for N minutes; memory and threads start/end, drop gaps.

    .venv/bin/python bench/soak.py            # 10 minutes (--quick: 1 minute, 2 drop runs)

Runs the real bridge under gunicorn (the Procfile's command) against the loopback Twilio and
OpenAI stand-ins from tests/fakes. Two parts, printed as Markdown tables:

1. The audio gap a listener hears when the engine's socket drops mid-sentence (close 1011 and
   an abrupt drop, alternating), over several runs: median and worst.
2. A soak: ``--concurrency`` calls at a time, each 10-40 s, with faults injected at random
   (socket drops, ``error`` events, 10 s output bursts, a refused reconnection); the worker's
   resident memory and thread count at the start, during (peak) and at the end, sampled every
   30 s, with the growth judged from the slope of a straight line fitted to the second half of
   the run (the first minutes fill caches, pools and allocator arenas; a leak keeps climbing).
"""

from __future__ import annotations

import argparse
import base64
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import footer, header
from tests.call_helpers import (
    BRIDGE_NUMBER,
    CALLER_NUMBER,
    Stack,
    agent_of,
    bridge_stack,
    new_sessions,
    played_gaps,
    tone_ulaw,
    wait_streaming,
)
from tests.fakes.audio import pcm16_to_bytes, sine
from tests.fakes.openai_events import output_audio_delta
from tests.fakes.openai_translate import FakeSession, FakeTranslationServer, tone_for
from tests.fakes.twilio import DialBehaviour, FakeCall


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return -1


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minutes, value) points: MiB (or threads) per minute."""
    if len(points) < 2:
        return float("nan")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


SAMPLE_EVERY_S = 30.0


def place(stack: Stack, seconds: float) -> tuple[FakeCall, FakeCall, FakeSession]:
    assert stack.openai is not None
    before = len(stack.openai.sessions)
    stack.twilio.default_dial = DialBehaviour(audio=tone_ulaw(seconds, 350))
    caller = stack.twilio.place_call(tone_ulaw(seconds), from_=CALLER_NUMBER, to=BRIDGE_NUMBER)
    agent = agent_of(stack.twilio, caller)
    wait_streaming(stack.twilio, caller, agent)
    to_agent = next(s for s in new_sessions(stack.openai, before) if s.output_language == "en")
    return caller, agent, to_agent


def measure_drop_gaps(stack: Stack, runs: int) -> list[float]:
    gaps = []
    for i in range(runs):
        caller, agent, to_agent = place(stack, 12)
        time.sleep(2.0)
        dropped = time.monotonic()
        to_agent.drop(1011 if i % 2 == 0 else None)
        time.sleep(4.0)
        # Gaps in the translation itself (the quiet passthrough would fill them otherwise).
        gaps.append(played_gaps(agent, dropped - 0.1, time.monotonic(), tone_for("en")))
        caller.hangup()
        caller.wait_ended(10)
        time.sleep(0.5)
    return gaps


def inject_fault(stack: Stack, session: FakeSession, rng: random.Random) -> str:
    assert stack.openai is not None
    kind = rng.choice(["drop-1011", "drop-abrupt", "error", "burst", "refused-reconnect"])
    if kind == "drop-1011":
        session.drop(1011)
    elif kind == "drop-abrupt":
        session.drop(None)
    elif kind == "error":
        session.send_error("server_error", "injected by the soak bench")
    elif kind == "burst":
        tone = base64.b64encode(pcm16_to_bytes(sine(440, 4800, 24000, 8000))).decode()
        for i in range(50):
            session.send(output_audio_delta(tone, 200 * (i + 1)))
    else:
        stack.openai.refuse_status = 503
        session.drop(1011)
        time.sleep(1.0)
        stack.openai.refuse_status = None
    return kind


def soak(stack: Stack, minutes: float, concurrency: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    pid = stack.bridge.worker_pid()
    deadline = time.monotonic() + minutes * 60
    faults: dict[str, int] = {}
    completed = 0
    peak = rss_mib(pid)
    lock = threading.Lock()

    def one_call(worker_rng: random.Random) -> None:
        nonlocal completed, peak
        while time.monotonic() < deadline:
            length = worker_rng.uniform(10, 40)
            try:
                caller, _agent, to_agent = place(stack, length + 5)
            except (AssertionError, StopIteration, TimeoutError):
                # Set-up timed out, or another placer's sessions were taken for this call's
                # (calls start concurrently): try again rather than lose this placer.
                continue
            end = time.monotonic() + length
            while time.monotonic() < end:
                time.sleep(worker_rng.uniform(2, 8))
                if time.monotonic() < end and worker_rng.random() < 0.6:
                    kind = inject_fault(stack, to_agent, worker_rng)
                    with lock:
                        faults[kind] = faults.get(kind, 0) + 1
            caller.hangup()
            caller.wait_ended(15)
            with lock:
                completed += 1
                peak = max(peak, rss_mib(pid))

    threads = [
        threading.Thread(target=one_call, args=(random.Random(rng.random()),), daemon=True)
        for _ in range(concurrency)
    ]
    for t in threads:
        t.start()
        time.sleep(1.0)
    samples: list[tuple[float, float, int]] = []
    began = time.monotonic()
    next_sample = began
    while any(t.is_alive() for t in threads):
        now_rss = rss_mib(pid)
        with lock:
            peak = max(peak, now_rss)
        if time.monotonic() >= next_sample:
            samples.append(((time.monotonic() - began) / 60, now_rss, threads_of(pid)))
            next_sample += SAMPLE_EVERY_S
        time.sleep(5)
    return {"completed": completed, "faults": faults, "peak": peak, "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--drop-runs", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="1 minute, 2 drop runs")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace the worker's allocations; growth by site every minute in the log folder",
    )
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.drop_runs = 1.0, 2
    print(header("Soak"), end="\n\n")
    log_dir = Path(tempfile.mkdtemp(prefix="soak-"))
    env = {"MAX_CONCURRENT_CALLS": "50"}
    if args.tracemalloc:
        # bench/profiling/sitecustomize.py, imported by the worker when on its path.
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent / "profiling")
        env["BENCH_TRACEMALLOC_OUT"] = str(log_dir / "tracemalloc")
        print(f"allocation growth by site: {log_dir}/tracemalloc.<worker pid>\n")
    with (
        FakeTranslationServer() as openai,
        bridge_stack(log_dir, env, openai) as stack,
    ):
        if args.drop_runs:
            gaps = measure_drop_gaps(stack, args.drop_runs)
            print("### Audio gap after an engine socket drop\n")
            print("| runs | median s | worst s | each (s) |")
            print("| ---: | ---: | ---: | --- |")
            each = ", ".join(f"{g:.2f}" for g in gaps)
            print(f"| {len(gaps)} | {statistics.median(gaps):.2f} | {max(gaps):.2f} | {each} |\n")
            sys.stdout.flush()
        if args.minutes <= 0:
            return

        pid = stack.bridge.worker_pid()
        time.sleep(2.0)
        print(f"bridge threads by kind at the start: {stack.bridge.threads_by_kind()}")
        before_rss, before_threads = rss_mib(pid), stack.bridge.worker_threads()
        started = time.monotonic()
        result = soak(stack, args.minutes, args.concurrency, args.seed)
        time.sleep(3.0)
        after_rss, after_threads = rss_mib(pid), stack.bridge.worker_threads()
        ran = (time.monotonic() - started) / 60
        samples: list[tuple[float, float, int]] = result["samples"]  # type: ignore[assignment]
        second_half = [s for s in samples if s[0] >= ran / 2]
        rss_slope = slope_per_min([(m, r) for m, r, _ in second_half])
        thread_slope = slope_per_min([(m, float(t)) for m, _, t in second_half])
        # Flat: under 0.5 MiB a minute over the second half (a leak of one call's buffers per
        # call would be several MiB a minute at this call rate).
        verdict = "flat" if abs(rss_slope) < 0.5 else "growing" if rss_slope > 0 else "shrinking"
        print(f"\n### Soak: {ran:.1f} min, {args.concurrency} calls at a time, faults injected\n")
        print(
            "| | worker RSS MiB | worker threads |\n| --- | ---: | ---: |\n"
            f"| start (idle) | {before_rss:.1f} | {before_threads} |\n"
            f"| peak / during | {result['peak']:.1f} | "
            f"{max((t for _, _, t in samples), default=before_threads)} |\n"
            f"| end (idle, all calls over) | {after_rss:.1f} | {after_threads} |\n"
            f"| slope over the second half, per minute | {rss_slope:+.2f} | {thread_slope:+.2f} |\n"
        )
        print(f"growth (RSS, second half): {verdict}; calls completed: {result['completed']}")
        series = ", ".join(f"{m:.1f} min {r:.0f} MiB/{t} thr" for m, r, t in samples)
        print(f"worker RSS and threads every {SAMPLE_EVERY_S:.0f} s (calls running): {series}")
        print(f"faults injected: {result['faults']}")
        print(
            f"bridge threads by kind at the end (gunicorn's idle pool left out): "
            f"{stack.bridge.threads_by_kind()}"
        )
        print(
            f"calls still active after the soak: {stack.bridge.metric('bridge_active_calls'):.0f}"
        )
        print(footer())


if __name__ == "__main__":
    main()
