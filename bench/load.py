"""Load: N simultaneous two-leg calls against the bridge under gunicorn (the Procfile's command).

    .venv/bin/python bench/load.py                 # N = 1, 5, 10, 25, 50, 100, 200; 30 s each
    .venv/bin/python bench/load.py --quick         # N = 1, 25; 10 s each
    .venv/bin/python bench/load.py --calls 100 --seconds 60
    .venv/bin/python bench/load.py --instances 2   # two bridges sharing calls through Redis

For each N a fresh bridge is started exactly as the Procfile runs it (``BRIDGE_THREADS`` and
``MAX_CONCURRENT_CALLS`` sized for N, as an operator would), with the translation engine pointed
at a loopback stand-in that answers every append at once. The peers (Twilio and OpenAI, see
``bench/load_peers.py``) run in this process, in one asyncio loop, never in the bridge's. Calls
are set up one after another, then every leg streams at real-time pace for ``--seconds``
(the measurement window), then the callers hang up. Reported per N:

* added latency p50/p99 per direction. In: a Twilio frame sent → the append carrying it
  received by the engine stand-in, for the append's last frame (the bridge's own processing)
  and for its first (raw: plus the engine's intentional 100 ms batching). Out: the stand-in
  sends a delta → the listener receives its first frame (only the first: the bridge paces the
  rest on purpose);
* lost frames (frames sent but never appended, translated frames owed but never received)
  and late frames (ones before which the listener's simulated Twilio buffer had been empty for
  more than 20 ms: a gap heard in the cadence);
* the bridge worker's CPU seconds per call-minute and resident memory per call (above the
  idle worker), and this generator's own CPU and send lateness, to show it kept up.

The bench stops at the first N that misses the target (p99 ≤ 20 ms each way, nothing lost),
unless ``--keep-going``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.load_peers import (
    Carrier,
    Leg,
    Router,
    Session,
    Translator,
    frames_of,
)
from bench.machine import footer, header
from tests.bridge_process import (
    ACCOUNT_SID,
    AGENT_NUMBER,
    AUTH_TOKEN,
    ROOT,
    BridgeProcess,
    free_port,
    run_bridge,
)
from tests.redis_server import redis_url

CALLER_NUMBER = "+34911222333"
BRIDGE_NUMBER = "+15550002222"
TARGET_P99_MS = 20.0
# Late: Twilio would have played more than one frame of silence before the frame arrived.
# (Translated frames leave in bursts, up to 100 ms ahead, so the spacing between arrivals says
# nothing; the playout buffer, simulated as Twilio's, does.)
LATE_GAP_S = 0.020
WARMUP_S = 2.0
# Deltas sent this long before the window ends must have all their frames heard by its end.
SETTLE_S = 0.5
SETUP_TIMEOUT_S = 20.0
# The generator itself sending frames later than this (p99) means the machine was too busy.
GENERATOR_LATE_MS = 5.0


@dataclass
class CallUnderLoad:
    caller: Leg
    agent: Leg
    to_agent: Session  # caller → agent: speaks the agent's language (en)
    to_caller: Session


@dataclass
class Result:
    label: str
    n: int
    lat_in_own: list[float]
    lat_in_raw: list[float]
    lat_out: list[float]
    lost: int
    expected: int
    late: int
    heard: int
    max_gap_ms: float
    cpu_per_call_min: float
    rss_per_call_mib: float
    worker_threads: int
    gen_cpu_share: float
    gen_late_p99_ms: float
    load: str
    broke: str = ""


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- one run ------------------------------------------------------------------------------------


async def setup_call(carrier: Carrier, translator: Translator) -> CallUnderLoad:
    """Place one call and wait until both its sessions are configured and both legs started.

    Calls are set up one at a time, so the next two sessions configured are this call's: one
    process opens them before it dials the agent; several instances (REDIS_URL) open each
    where its speaker's stream lands, so both legs connect before they are waited for.
    """
    caller, caller_twiml = await carrier.place_call()
    agent_sid, agent_twiml = await asyncio.wait_for(carrier.dialled.get(), SETUP_TIMEOUT_S)
    agent = carrier.legs[agent_sid]
    carrier.agent_of[caller.call_sid] = agent_sid
    await carrier.connect(caller, caller_twiml)
    await carrier.connect(agent, agent_twiml)
    sessions = [
        await asyncio.wait_for(translator.configured.get(), SETUP_TIMEOUT_S) for _ in range(2)
    ]
    by_language = {s.language: s for s in sessions}
    return CallUnderLoad(caller, agent, by_language["en"], by_language["es"])


def inbound_latencies(
    speaker: Leg, session: Session, start: float, end: float
) -> tuple[list[float], list[float], int, int]:
    """(own, raw) latencies of the appends received in [start, end); frames lost and owed."""
    own, raw = [], []
    total = 0
    for at, samples in session.appends:
        first = frames_of(total)
        total += samples
        last = frames_of(total) - 1
        if start <= at < end and last < len(speaker.sent_at):
            own.append(at - speaker.sent_at[last])
            raw.append(at - speaker.sent_at[first])
    covered = frames_of(sum(s for at, s in session.appends if at < end))
    owed = sum(1 for t in speaker.sent_at if t < end - SETTLE_S)
    return own, raw, max(0, owed - covered), owed


def outbound_latencies(
    session: Session, listener: Leg, start: float, end: float
) -> tuple[list[float], int, int]:
    """Delta sent → its first frame heard, for deltas sent in [start, end); frames lost, owed."""
    latencies = []
    before = 0
    owed = 0
    heard = sum(1 for t in listener.translated_at if t < end)
    for sent, samples in session.deltas:
        first_frame = (before // 3) // 160
        before += samples
        if sent < end - SETTLE_S:
            owed = (before // 3) // 160
        if start <= sent < end and first_frame < len(listener.translated_at):
            latencies.append(listener.translated_at[first_frame] - sent)
    return latencies, max(0, owed - heard), owed


def gaps(listener: Leg, start: float, end: float) -> tuple[int, float, int]:
    """Late frames (the listener's buffer had been empty for more than LATE_GAP_S when they
    arrived), the longest such silence, and the frames heard in [start, end)."""
    dry = [d for t, d in zip(listener.heard_at, listener.dry_s, strict=True) if start <= t < end]
    return sum(1 for d in dry if d > LATE_GAP_S), max(dry, default=0.0), len(dry)


async def run_load(
    n: int,
    seconds: float,
    bridge_port: int,
    log_dir: Path,
    profile: bool = False,
    root: Path = ROOT,
    redis_url: str | None = None,
    instances: int = 1,
) -> Result:
    translator = Translator()
    await translator.start()
    ports = [bridge_port] + [free_port() for _ in range(instances - 1)]
    # Several instances (REDIS_URL): Twilio is told a balancer's address where nobody listens,
    # and the Router spreads every request (webhooks, streams) over the instances in turn.
    public = f"http://127.0.0.1:{bridge_port if instances == 1 else free_port()}"
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    carrier = Carrier(Router(public, urls, AUTH_TOKEN), ACCOUNT_SID, CALLER_NUMBER, BRIDGE_NUMBER)
    await carrier.start()
    env = {
        "ENGINE": "openai",
        "OPENAI_API_KEY": "sk-load-test",
        "OPENAI_BASE_URL": translator.base_url,
        "TWILIO_API_BASE_URL": f"http://127.0.0.1:{carrier.rest_port}",
        "MAX_CONCURRENT_CALLS": str(max(n, 1)),
        # Two request threads per call (its two Media Streams), plus room for webhooks.
        "BRIDGE_THREADS": str(max(64, 2 * n + 32)),
        "TRANSCRIPTION_MODEL": "off",
        "AGENT_MACHINE_DETECTION": "off",
    }
    if instances > 1:
        assert redis_url is not None
        shared_db = f"sqlite:///{log_dir / f'calls-shared-{bridge_port}.sqlite3'}"
        env.update({"REDIS_URL": redis_url, "PUBLIC_BASE_URL": public, "DATABASE_URL": shared_db})
    if profile:
        # bench/profiling/sitecustomize.py samples the worker's threads (py-spy cannot attach
        # here); results go to PROFILE_OUT.<worker pid>.
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent / "profiling")
        env["BENCH_PROFILE_OUT"] = str(log_dir / f"profile-n{n}")
    try:
        with ExitStack() as stack:
            bridges = [stack.enter_context(bridge_at(root, p, env, log_dir)) for p in ports]
            return await measure(n, seconds, bridges, carrier, translator)
    finally:
        await carrier.close()
        await translator.close()


async def measure(
    n: int, seconds: float, bridges: list[BridgeProcess], carrier: Carrier, translator: Translator
) -> Result:
    """CPU, memory and threads are the sum over the bridges' workers (one, unless
    ``--instances``)."""
    pids = [bridge.worker_pid() for bridge in bridges]
    await asyncio.sleep(1.0)
    idle_rss = sum(proc_status(pid, "VmRSS") for pid in pids)
    calls = []
    for _ in range(n):
        call = await setup_call(carrier, translator)
        carrier.begin_media([call.caller, call.agent], time.monotonic())
        calls.append(call)
    await asyncio.sleep(WARMUP_S)
    start = time.monotonic()
    cpu0, gen0 = sum(proc_cpu_s(pid) for pid in pids), time.process_time()
    await asyncio.sleep(seconds)
    end = time.monotonic()
    cpu1, gen1 = sum(proc_cpu_s(pid) for pid in pids), time.process_time()
    rss = sum(proc_status(pid, "VmRSS") for pid in pids)
    threads = sum(proc_status(pid, "Threads") for pid in pids)
    await asyncio.sleep(SETTLE_S)
    for call in calls:
        await carrier.hang_up(call.caller)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(c.agent.done.is_set() for c in calls):
        await asyncio.sleep(0.1)

    lat_in_own: list[float] = []
    lat_in_raw: list[float] = []
    lat_out: list[float] = []
    lost = expected = late = heard = 0
    max_gap = 0.0
    for call in calls:
        for speaker, session, listener in (
            (call.caller, call.to_agent, call.agent),
            (call.agent, call.to_caller, call.caller),
        ):
            own, raw, lost_in, owed_in = inbound_latencies(speaker, session, start, end)
            out, lost_out, owed_out = outbound_latencies(session, listener, start, end)
            late_here, gap, frames = gaps(listener, start, end)
            lat_in_own += own
            lat_in_raw += raw
            lat_out += out
            lost += lost_in + lost_out
            expected += owed_in + owed_out
            late += late_here
            heard += frames
            max_gap = max(max_gap, gap)
    sends = [x for c in calls for leg in (c.caller, c.agent) for x in leg.late_sends]
    call_minutes = n * (end - start) / 60
    result = Result(
        label="",
        n=n,
        lat_in_own=lat_in_own,
        lat_in_raw=lat_in_raw,
        lat_out=lat_out,
        lost=lost,
        expected=expected,
        late=late,
        heard=heard,
        max_gap_ms=1000 * max_gap,
        cpu_per_call_min=(cpu1 - cpu0) / call_minutes,
        rss_per_call_mib=(rss - idle_rss) / 1024 / n,
        worker_threads=threads,
        gen_cpu_share=(gen1 - gen0) / (end - start),
        gen_late_p99_ms=1000 * pct(sends, 0.99),
        load=f"{os.getloadavg()[0]:.2f}",
    )
    p99s = (pct(lat_in_own, 0.99), pct(lat_out, 0.99))
    if result.lost or any(p > TARGET_P99_MS / 1000 for p in p99s):
        result.broke = "missed the target"
    return result


# -- report ---------------------------------------------------------------------------------


def ms(values: list[float], q: float) -> str:
    return f"{1000 * pct(values, q):.1f}"


LEGEND = """\
in: a Twilio frame sent → the append carrying it received, for the append's last frame (the
bridge's own processing); in raw: for its first frame (plus the engine's 100 ms batching);
out: a delta sent → its first frame heard; lost / expected: frames; late: frames before which
the listener's simulated Twilio buffer had been empty > 20 ms; gen: this generator's CPU (cores)
and how late it sent frames (p99)."""

TABLE_HEAD = (
    "| N | in p50 / p99 ms | in raw p50 / p99 ms | out p50 / p99 ms | lost / expected "
    "| late / heard | longest silence ms | worker CPU s per call-min | RSS MiB per call "
    "| worker threads | gen CPU / lateness p99 ms | load (1 min) |\n"
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def row(r: Result) -> str:
    return (
        f"| {r.label}{r.n} | {ms(r.lat_in_own, 0.5)} / {ms(r.lat_in_own, 0.99)} "
        f"| {ms(r.lat_in_raw, 0.5)} / {ms(r.lat_in_raw, 0.99)} "
        f"| {ms(r.lat_out, 0.5)} / {ms(r.lat_out, 0.99)} | {r.lost} / {r.expected} "
        f"| {r.late} / {r.heard} | {r.max_gap_ms:.0f} | {r.cpu_per_call_min:.2f} "
        f"| {r.rss_per_call_mib:.2f} | {r.worker_threads} "
        f"| {r.gen_cpu_share:.2f} / {r.gen_late_p99_ms:.1f} | {r.load} |"
    )


@contextmanager
def bridge_at(root: Path, port: int, env: dict[str, str], log_dir: Path) -> Iterator[BridgeProcess]:
    """The bridge of checkout ``root`` under gunicorn, as the tests start it (the Procfile's
    command), on ``port``; for ``--baseline``, the same command run from another tree."""
    if root == ROOT:
        with run_bridge(port, env, log_dir) as bridge:
            yield bridge
        return
    full_env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", "/tmp"),
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "AGENT_NUMBER": AGENT_NUMBER,
        "DATABASE_URL": f"sqlite:///{log_dir / f'calls-{port}.sqlite3'}",
        **env,
    }
    command = next(
        line.removeprefix("web:").strip()
        for line in (root / "Procfile").read_text().splitlines()
        if line.startswith("web:")
    )
    log_path = log_dir / f"bridge-{port}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {command}"],
            cwd=root,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the baseline bridge did not start (see {log_path})")
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        yield BridgeProcess(proc, port, log_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def extract(ref: str) -> Path:
    """The tree of git ``ref`` in a temporary folder (the repository itself is not touched)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    folder = Path(tempfile.mkdtemp(prefix=f"bench-baseline-{sha}-"))
    archive = subprocess.run(["git", "archive", sha], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="1,5,10,25,50,100,200", help="comma-separated N values")
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement window per N")
    parser.add_argument("--quick", action="store_true", help="N = 1, 25 for 10 s each")
    parser.add_argument(
        "--profile", action="store_true", help="sample the worker's threads (see bench/profiling)"
    )
    parser.add_argument("--keep-going", action="store_true", help="go on past a missed target")
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="bridge instances to spread requests over, sharing calls through a Redis "
        "(TEST_REDIS_URL, else a throwaway redis-server; see Router in bench/load_peers.py)",
    )
    parser.add_argument(
        "--baseline",
        metavar="GIT_REF",
        help="also run the bridge of this commit, alternating with this tree's for each N",
    )
    args = parser.parse_args()
    if args.instances < 1:
        parser.error("--instances: at least 1")
    counts = [1, 25] if args.quick else [int(c) for c in args.calls.split(",")]
    seconds = 10.0 if args.quick else args.seconds
    print(header("Load"), end="\n\n")
    print(
        f"{seconds:.0f} s window per N after {WARMUP_S:.0f} s of warm-up; target p99 ≤ "
        f"{TARGET_P99_MS:.0f} ms each way and no lost frames\n",
        flush=True,
    )
    print(LEGEND, end="\n\n")
    log_dir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    services = ExitStack()
    redis = services.enter_context(redis_url()) if args.instances > 1 else None
    if args.instances > 1:
        print(f"{args.instances} instances sharing calls through Redis, requests taking turns\n")
    trees = [("", ROOT)]
    if args.baseline:
        trees.insert(0, (f"{args.baseline} ", extract(args.baseline)))
        print(f"rows named {args.baseline!r}: the bridge of that commit, run alternately\n")
    print(TABLE_HEAD, flush=True)
    starved = False
    for n in counts:
        broke = True
        for label, root in trees:
            result = asyncio.run(
                run_load(
                    n, seconds, free_port(), log_dir, args.profile, root, redis, args.instances
                )
            )
            result.label = label
            print(row(result), flush=True)
            broke = broke and bool(result.broke)
            starved = starved or result.gen_late_p99_ms > GENERATOR_LATE_MS
        if broke and not args.keep_going:
            print(f"\nstopped at N = {n}: missed the target")
            break
    if starved:
        print(
            f"\nwarning: the generator sent frames more than {GENERATOR_LATE_MS:.0f} ms late "
            "(p99): the machine was too busy for these latencies to be the bridge's alone"
        )
    services.close()
    print(f"\n{footer()}; bridge logs in {log_dir}")


if __name__ == "__main__":
    main()
