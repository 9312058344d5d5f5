"""Load: N simultaneous two-leg calls against the bridge under gunicorn, side by side with a
baseline commit, the bridge and this generator pinned to separate cores.

    .venv/bin/python bench/load.py --baseline 185dac9            # N = 1 … 200, 20 s each
    .venv/bin/python bench/load.py --baseline 185dac9 --quick    # N = 1, 10; 8 s; one round
    .venv/bin/python bench/load.py --calls 1,10 --seconds 30 --rounds 2 --keep-going
    .venv/bin/python bench/load.py --instances 2   # two bridges sharing calls through Redis

For each N a fresh bridge is started exactly as the Procfile runs it (``BRIDGE_THREADS`` and
``MAX_CONCURRENT_CALLS`` sized for N, as an operator would), every feature on (passthrough,
echo guard, marks, transcripts, call records), its translation engine pointed at a loopback
stand-in. The bridge (gunicorn master and worker) runs on core 0 (``taskset``), the peers
(Twilio and OpenAI, ``bench/load_peers.py``, one asyncio loop) on core 1, so neither takes the
other's CPU; each run prints the affinity each got. With ``--baseline REV`` the bridge of
commit REV (a detached ``git worktree`` in a temporary folder, run with this venv) and this
tree's take turns for every N (baseline, current, baseline, current with ``--rounds 2``).

Calls are set up one after another, then every leg streams at real-time pace, and after a
warm-up the window (``--seconds``) is measured; then the callers hang up. What is measured
and how is in ``bench/load_stats.py`` (its LEGEND is printed with the table). The step series
stops at the first N where every tree breaks a call (p99 > 20 ms either way, lost frames or
inserted silences), unless ``--keep-going``. Results: a table on stdout and the same in
``bench/results/load-<UTC date>.md`` and ``.json`` (machine, load average, commits, command).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import shlex
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

from bench.load_peers import Carrier, Leg, Router, Session, Translator
from bench.load_stats import (
    LEGEND,
    TABLE_HEAD,
    Result,
    inbound_latencies,
    inserted_silences,
    late_frames,
    markdown,
    outbound_latencies,
    pct,
    row,
    write_results,
)
from bench.machine import cpu_model, footer, header, load_average
from tests.bridge_process import ACCOUNT_SID, AGENT_NUMBER, AUTH_TOKEN, ROOT, free_port
from tests.redis_server import redis_url as throwaway_redis

CALLER_NUMBER = "+34911222333"
BRIDGE_NUMBER = "+15550002222"
WARMUP_S = 2.0
SETTLE_S = 0.5
SETUP_TIMEOUT_S = 20.0
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 25.0
DEFAULT_STEPS = "1,10,25,50,100,150,200"
RESULTS = ROOT / "bench" / "results"
RUNS = ["bridge", "config", "Procfile", "requirements.lock"]


@dataclass
class CallUnderLoad:
    caller: Leg
    agent: Leg
    to_agent: Session  # caller → agent: speaks the agent's language (en)
    to_caller: Session


@dataclass(frozen=True)
class Tree:
    """One side of the comparison: a checkout to run the Procfile's command in."""

    name: str  # "current" or "baseline"
    commit: str
    root: Path


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def cpus_of(pid: int) -> str:
    """The CPUs ``pid`` may run on, as taskset writes them."""
    return ",".join(str(c) for c in sorted(os.sched_getaffinity(pid)))


def short_commit(ref: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def say(text: str) -> None:
    """Progress, on stderr: stdout carries the tables only."""
    print(text, file=sys.stderr, flush=True)


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


# -- the bridge --------------------------------------------------------------------------------


class Bridge:
    """One bridge under gunicorn: its master's process and the port it serves."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path

    def worker_pid(self) -> int:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        pids = [int(p) for p in children.split()]
        if len(pids) != 1:
            raise RuntimeError(f"expected one gunicorn worker, found {pids} ({self.log_path})")
        return pids[0]


@contextmanager
def bridge_at(
    root: Path, port: int, env: dict[str, str], log_dir: Path, cpus: str | None
) -> Iterator[Bridge]:
    """The Procfile's command run in checkout ``root`` on ``port``, under ``taskset -c cpus``
    (master and worker: the worker inherits the master's affinity); stopped like a platform
    stops it (SIGTERM, then SIGKILL to its process group)."""
    full_env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", "/tmp"),
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "AGENT_NUMBER": AGENT_NUMBER,
        "DATABASE_URL": f"sqlite:///{log_dir / f'calls-{port}.sqlite3'}",
        # The config file binds 0.0.0.0 (a deployment's setting); loopback is enough here.
        "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port}",
        **env,
    }
    command = next(
        line.removeprefix("web:").strip()
        for line in (root / "Procfile").read_text().splitlines()
        if line.startswith("web:")
    )
    pin = ["taskset", "-c", cpus] if cpus else []
    log_path = log_dir / f"bridge-{port}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [*pin, "/bin/sh", "-c", f"exec {command}"],
            cwd=root,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bridge in {root} did not start (see {log_path})")
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        yield Bridge(proc, port, log_path)
    finally:
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:  # the group id cannot be reused while the master lives
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def baseline_tree(ref: str) -> Iterator[Tree]:
    """Commit ``ref`` checked out in a detached worktree in a temporary folder (this
    repository's branches and work tree are not touched), removed afterwards."""
    commit = short_commit(ref)
    folder = Path(tempfile.mkdtemp(prefix=f"bench-baseline-{commit}-")) / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(folder), commit],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    try:
        yield Tree("baseline", commit, folder)
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(folder)],
            cwd=ROOT,
            check=False,
            capture_output=True,
        )


# -- one run -------------------------------------------------------------------------------------


async def run_load(
    n: int,
    seconds: float,
    bridge_port: int,
    log_dir: Path,
    profile: bool = False,
    root: Path = ROOT,
    redis_url: str | None = None,
    instances: int = 1,
    *,
    tree: Tree | None = None,
    round_no: int = 1,
    bridge_cpus: str | None = None,
) -> Result:
    """One run of ``n`` calls for ``seconds`` against the bridge of ``tree`` (else of
    ``root``, unpinned unless ``bridge_cpus``) on ``bridge_port``."""
    tree = tree or Tree("current", short_commit("HEAD", root), root)
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
        # Every feature on: transcripts (the stand-in sends them), passthrough, echo guard and
        # records are on by default. Machine detection would wait for a result nobody sends.
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
            bridges = [
                stack.enter_context(bridge_at(tree.root, p, env, log_dir, bridge_cpus))
                for p in ports
            ]
            pids = [b.worker_pid() for b in bridges]
            say(
                f"{tree.name} {tree.commit} N={n} round {round_no}: bridge master "
                f"{bridges[0].proc.pid} on CPUs {cpus_of(bridges[0].proc.pid)}, worker "
                f"{pids[0]} on CPUs {cpus_of(pids[0])}; generator {os.getpid()} on CPUs "
                f"{cpus_of(0)}"
            )
            result = await measure(n, seconds, pids, carrier, translator)
    finally:
        await carrier.close()
        await translator.close()
    result.tree, result.commit, result.round = tree.name, tree.commit, round_no
    return result


async def measure(
    n: int, seconds: float, pids: list[int], carrier: Carrier, translator: Translator
) -> Result:
    """CPU, memory and threads are the sum over the bridges' workers (one, unless
    ``--instances``)."""
    await asyncio.sleep(1.0)
    idle_rss = sum(proc_status(pid, "VmRSS") for pid in pids)
    idle_threads = sum(proc_status(pid, "Threads") for pid in pids)
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

    result = Result(
        tree="",
        commit="",
        n=n,
        round=0,
        lat_in_own=[],
        lat_in_raw=[],
        lat_out=[],
        start_out=[],
        start_played=[],
        lost=0,
        expected=0,
        silences=0,
        silent_frames=0,
        engine_late_gaps=0,
        late=0,
        heard=0,
        max_gap_ms=0.0,
        cpu_per_call_min=(cpu1 - cpu0) / (n * (end - start) / 60),
        rss_per_call_mib=(rss - idle_rss) / 1024 / n,
        threads=threads,
        idle_threads=idle_threads,
        gen_cpu_share=(gen1 - gen0) / (end - start),
        gen_late_p99_ms=0.0,
        load=os.getloadavg()[0],
    )
    for call in calls:
        for speaker, session, listener in (
            (call.caller, call.to_agent, call.agent),
            (call.agent, call.to_caller, call.caller),
        ):
            own, raw, lost_in, owed_in = inbound_latencies(
                speaker.sent_at, session.appends, start, end
            )
            out = outbound_latencies(session.deltas, listener.heard, start, end)
            silences = inserted_silences(listener.heard, session.deltas)
            late, gap = late_frames(listener.heard, listener.dry_s, start, end)
            result.lat_in_own += own
            result.lat_in_raw += raw
            result.lat_out += out.out
            result.start_out += out.start_out
            result.start_played += out.start_played
            result.lost += lost_in + out.lost
            result.expected += owed_in + out.owed
            result.silences += silences.runs
            result.silent_frames += silences.frames
            result.engine_late_gaps += silences.engine_late
            result.late += late
            result.heard += sum(1 for t in listener.heard.at if start <= t < end)
            result.max_gap_ms = max(result.max_gap_ms, 1000 * gap)
    sends = [x for c in calls for leg in (c.caller, c.agent) for x in leg.late_sends]
    result.gen_late_p99_ms = 1000 * pct(sends, 0.99) if sends else 0.0
    return result


# -- the series ----------------------------------------------------------------------------------


def pin_generator(cpus: str | None) -> None:
    """This process (and the threads it starts later) on ``cpus``."""
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", default=DEFAULT_STEPS, help="comma-separated N values")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window per N")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each tree per N, in turn")
    parser.add_argument("--quick", action="store_true", help="N = 1, 10 for 8 s, one round")
    parser.add_argument("--baseline", metavar="REV", help="also run the bridge of commit REV")
    parser.add_argument("--keep-going", action="store_true", help="go on past a broken N")
    parser.add_argument("--bridge-cpus", default="0", help="taskset CPU list of the bridge")
    parser.add_argument("--generator-cpus", default="1", help="CPU list of this generator")
    parser.add_argument("--no-pin", action="store_true", help="pin neither (one-core machines)")
    parser.add_argument("--out", type=Path, help="results file name without suffix")
    parser.add_argument(
        "--profile", action="store_true", help="sample the worker's threads (see bench/profiling)"
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="bridge instances to spread requests over, sharing calls through a Redis "
        "(TEST_REDIS_URL, else a throwaway redis-server; see Router in bench/load_peers.py)",
    )
    args = parser.parse_args()
    if args.instances < 1 or args.rounds < 1:
        parser.error("--instances and --rounds: at least 1")
    counts = [1, 10] if args.quick else [int(c) for c in args.calls.split(",")]
    seconds = 8.0 if args.quick else args.seconds
    bridge_cpus = None if args.no_pin else args.bridge_cpus
    pin_generator(None if args.no_pin else args.generator_cpus)
    now = datetime.datetime.now(datetime.UTC)
    meta: dict[str, object] = {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores ({cpu_model()}), Python {sys.version.split()[0]}",
        "load average at the start": load_average(),
        "command": shlex.join(["bench/load.py", *sys.argv[1:]]),
        "window": f"{seconds:g} s per run after {WARMUP_S:g} s of warm-up",
        "bridge CPUs": bridge_cpus or "any",
        "generator CPUs": cpus_of(0),
    }
    print(header("Load"), end="\n\n")
    print(LEGEND, end="\n\n")
    log_dir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    results: list[Result] = []
    with ExitStack() as stack:
        redis = stack.enter_context(throwaway_redis()) if args.instances > 1 else None
        current = Tree("current", short_commit("HEAD"), ROOT)
        dirty = subprocess.run(
            # What runs: the bridge and its configuration (docs and results do not count).
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *RUNS],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        # Commits only: a result file names no folder of the machine it ran on.
        meta["current"] = f"{current.commit}{' + uncommitted changes' if dirty else ''} (this tree)"
        trees = [current]
        if args.baseline:
            baseline = stack.enter_context(baseline_tree(args.baseline))
            meta["baseline"] = f"{baseline.commit} (a temporary git worktree of it)"
            trees.insert(0, baseline)
        print(TABLE_HEAD, flush=True)
        for n in counts:
            here = []
            for round_no in range(1, args.rounds + 1):
                for tree in trees:
                    result = asyncio.run(
                        run_load(
                            n,
                            seconds,
                            free_port(),
                            log_dir,
                            args.profile,
                            redis_url=redis,
                            instances=args.instances,
                            tree=tree,
                            round_no=round_no,
                            bridge_cpus=bridge_cpus,
                        )
                    )
                    print(row(result), flush=True)
                    here.append(result)
            results += here
            if any(r.saturated() for r in here):
                say(f"GENERATOR SATURATED at N = {n}: its figures are not the bridge's alone")
            if all(r.broke() for r in here) and not args.keep_going:
                say(f"stopped at N = {n}: every tree broke the target")
                break
    meta["load average at the end"] = load_average()
    base = args.out or RESULTS / f"load-{now:%Y-%m-%d}"
    paths = write_results(base, meta, results)
    print()
    print(markdown(meta, results))
    print(f"{footer()}; written to {', '.join(str(p) for p in paths)}; bridge logs in {log_dir}")


if __name__ == "__main__":
    main()
