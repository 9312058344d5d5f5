"""What the cross-instance path costs: one process against two instances, in one run.

    .venv/bin/python bench/cross_instance.py [--calls 4] [--seconds 10] [--rounds 3]
    .venv/bin/python bench/cross_instance.py --only cross --calls 8   # load on two instances

Real bridges under gunicorn (the Procfile's command) against the loopback Twilio and OpenAI
stand-ins (tests/fakes), one redis-server (``TEST_REDIS_URL`` or a throwaway one). Each setup
carries ``--calls`` concurrent calls in which both parties talk all the time (a tone; the
stand-in "translates" it into 200 ms deltas):

* ``single``: no REDIS_URL, one process (today's path);
* ``cluster, legs together``: REDIS_URL, two instances, both streams of a call on one
  instance (the registry's cost, no audio hop);
* ``cross``: REDIS_URL, two instances, the caller's stream on one and the agent's on the
  other, so every translated chunk and every passthrough frame crosses through Redis.

Printed as a Markdown table: from the engine sending a translated delta to the listener's
leg (the Twilio stand-in) receiving its first and its last 20 ms frame, p50/p99 over every
delta after both legs were up; the Redis hop itself as the bridges measured it
(``bridge_fabric_hop_seconds``); frames the listeners heard against the frames expected;
and the CPU the bridge processes used per call-second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.bridge_process import BridgeProcess
from tests.call_helpers import (
    BRIDGE_NUMBER,
    CALLER_NUMBER,
    agent_of,
    bridge_stack,
    carries_tone,
    new_sessions,
    tone_ulaw,
    wait_streaming,
)
from tests.cluster_calls import Plan, cluster_stack
from tests.fakes.audio import ulaw_silence
from tests.fakes.openai_translate import FakeSession, FakeTranslationServer, tone_for
from tests.fakes.twilio import DialBehaviour, FakeCall, FakeTwilio
from tests.redis_server import redis_url

SETUPS: dict[str, Plan | None] = {
    "single": None,
    "cluster, legs together": {"voice": 0, "stream:caller": 0, "stream:agent": 0, "status": 1},
    "cross": {"voice": 0, "stream:caller": 0, "stream:agent": 1, "status": (0, 1)},
}


@dataclass
class Result:
    first: list[float]
    last: list[float]
    frames_heard: int
    frames_expected: int
    cpu_s: float
    call_s: float
    hop_sum: float
    hop_count: float
    hop_buckets: dict[float, float] = field(default_factory=dict)  # cumulative, by le


def delta_latencies(
    session: FakeSession, heard: FakeCall, freq_hz: float, after: float
) -> tuple[list[float], list[float]]:
    """Delta sent → its first / last frame at the listener (as tests/calls/test_call_flow.py)."""
    frames = [f for f in heard.heard_frames if carries_tone(f.data, freq_hz)]
    first: list[float] = []
    last: list[float] = []
    for k, (_, sent_at) in enumerate(session.sent_deltas):
        if sent_at < after or 10 * k + 9 >= len(frames):
            continue
        first.append(frames[10 * k].time - sent_at)
        last.append(frames[10 * k + 9].time - sent_at)
    return first, last


def merge(into: Result, more: Result) -> None:
    into.first += more.first
    into.last += more.last
    into.frames_heard += more.frames_heard
    into.frames_expected += more.frames_expected
    into.cpu_s += more.cpu_s
    into.call_s += more.call_s


def cpu_seconds(bridge: BridgeProcess) -> float:
    """utime + stime of the bridge's worker (clock ticks of /proc/PID/stat)."""
    fields = Path(f"/proc/{bridge.worker_pid()}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


def run_calls(
    twilio: FakeTwilio,
    openai: FakeTranslationServer,
    bridges: list[BridgeProcess],
    calls: int,
    seconds: float,
) -> Result:
    placed: list[tuple[FakeCall, FakeCall, FakeSession, FakeSession, float]] = []
    # Silence until every call is up (so no translation waits for a leg still connecting and
    # stands queued ahead of the rest), then both parties talk for the measured window.
    lead = 2.0 + 0.6 * calls
    talk = seconds + 2.0
    twilio.default_dial = DialBehaviour(audio=ulaw_silence(int(8000 * lead)) + tone_ulaw(talk, 350))
    cpu0 = sum(cpu_seconds(b) for b in bridges)
    t0 = time.monotonic()
    for _ in range(calls):
        before = len(openai.sessions)
        audio = ulaw_silence(int(8000 * lead)) + tone_ulaw(talk)
        caller = twilio.place_call(audio, from_=CALLER_NUMBER, to=BRIDGE_NUMBER)
        agent = agent_of(twilio, caller)
        wait_streaming(twilio, caller, agent)
        sessions = {s.output_language: s for s in new_sessions(openai, before)}
        both_up = max(caller.stream.started_at or 0, agent.stream.started_at or 0)  # type: ignore[union-attr]
        placed.append((caller, agent, sessions["en"], sessions["es"], both_up))
    assert time.monotonic() < t0 + lead, "calls took longer to place than their silence"
    measure_from = t0 + lead + 1.0
    measure_to = measure_from + seconds - 1.0
    time.sleep(max(0.0, measure_to - time.monotonic()))
    cpu = sum(cpu_seconds(b) for b in bridges) - cpu0
    call_s = calls * (measure_to - t0)  # CPU covers set-up and silence too: a fair mean
    result = Result([], [], 0, 0, cpu, call_s, 0.0, 0.0)
    for caller, agent, to_agent, to_caller, both_up in placed:
        for session, listener, lang in ((to_agent, agent, "en"), (to_caller, caller, "es")):
            first, last = delta_latencies(session, listener, tone_for(lang), both_up)
            result.first += first
            result.last += last
            heard = [f for f in listener.heard_frames if measure_from <= f.time <= measure_to]
            result.frames_heard += len(heard)
            result.frames_expected += int((measure_to - measure_from) / 0.02)
        caller.hangup()
    for caller, agent, *_ in placed:
        agent.wait_ended(15)
        caller.wait_ended(15)
    return result


def add_hops(result: Result, bridges: list[BridgeProcess]) -> None:
    """The bridges' own measure of the hop (cumulative since they started)."""
    for bridge in bridges:
        result.hop_sum += bridge.metric("bridge_fabric_hop_seconds_sum")
        result.hop_count += bridge.metric("bridge_fabric_hop_seconds_count")
        for line in requests.get(f"{bridge.url}/metrics", timeout=5).text.splitlines():
            if line.startswith("bridge_fabric_hop_seconds_bucket{"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                bound = float("inf") if le == "+Inf" else float(le)
                result.hop_buckets[bound] = result.hop_buckets.get(bound, 0) + float(
                    line.split()[-1]
                )


def bucket_quantile(buckets: dict[float, float], q: float) -> str:
    """The upper bound of the histogram bucket holding quantile ``q`` (``≤ x ms``)."""
    total = buckets.get(float("inf"), 0.0)
    if not total:
        return "-"
    for bound in sorted(buckets):
        if buckets[bound] >= q * total:
            return "> 2 s" if bound == float("inf") else f"≤ {1000 * bound:g} ms"
    return "-"


@contextmanager
def setup(
    name: str, plan: Plan | None, log_dir: Path, redis: str, openai: FakeTranslationServer
) -> Iterator[tuple[FakeTwilio, list[BridgeProcess]]]:
    folder = log_dir / name.replace(" ", "_").replace(",", "")
    folder.mkdir(exist_ok=True)
    if plan is None:
        with bridge_stack(folder, {}, openai) as stack:
            yield stack.twilio, [stack.bridge]
        return
    with cluster_stack(folder, 2, redis, openai) as cluster:
        cluster.route(plan)
        yield cluster.twilio, cluster.bridges


def ms(values: list[float], q: int) -> str:
    if len(values) < 2:
        return "n/a"
    return f"{1000 * statistics.quantiles(values, n=100)[q - 1]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4, help="concurrent calls per setup")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--only", choices=["single", "together", "cross"], default=None)
    parser.add_argument("--log-dir", type=Path, default=None, help="keep the bridges' logs")
    parser.add_argument("--rounds", type=int, default=1, help="measure each setup this often")
    args = parser.parse_args()
    wanted = {
        None: list(SETUPS),
        "single": ["single"],
        "together": ["cluster, legs together"],
        "cross": ["cross"],
    }[args.only]
    load = Path("/proc/loadavg").read_text().split()[0]
    print(
        f"{args.calls} concurrent calls per setup, both parties talking, {args.seconds:g} s "
        f"measured, {args.rounds} round(s) taking turns; load average {load} on "
        f"{os.cpu_count()} CPUs at the start\n"
    )
    print(
        "| setup | deltas | first frame p50 | p99 | last frame p50 | p99 "
        "| Redis hop mean (histogram) | frames heard | bridge CPU per call-second |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with (
        tempfile.TemporaryDirectory() as tmp,
        redis_url() as redis,
        FakeTranslationServer() as openai,
    ):
        logs = Path(tmp) if args.log_dir is None else args.log_dir
        logs.mkdir(parents=True, exist_ok=True)
        # Every setup up at once, measured in turn, round after round: drift in the machine's
        # other load then spreads over all of them instead of favouring the one run first.
        with ExitStack() as stacks:
            running = {
                name: stacks.enter_context(setup(name, SETUPS[name], logs, redis, openai))
                for name in wanted
            }
            results = {name: Result([], [], 0, 0, 0.0, 0.0, 0.0, 0.0) for name in wanted}
            for _ in range(args.rounds):
                for name, (twilio, bridges) in running.items():
                    more = run_calls(twilio, openai, bridges, args.calls, args.seconds)
                    merge(results[name], more)
            for name, (_twilio, bridges) in running.items():
                add_hops(results[name], bridges)
        for name, r in results.items():
            hop = "-"
            if r.hop_count:
                hop = (
                    f"{1000 * r.hop_sum / r.hop_count:.2f} ms (p50 "
                    f"{bucket_quantile(r.hop_buckets, 0.5)}, p99 "
                    f"{bucket_quantile(r.hop_buckets, 0.99)})"
                )
            print(
                f"| {name} | {len(r.first)} | {ms(r.first, 50)} ms | {ms(r.first, 99)} ms "
                f"| {ms(r.last, 50)} ms | {ms(r.last, 99)} ms | {hop} "
                f"| {100 * r.frames_heard / max(1, r.frames_expected):.1f} % "
                f"| {1000 * r.cpu_s / r.call_s:.1f} ms |",
                flush=True,
            )


if __name__ == "__main__":
    main()
