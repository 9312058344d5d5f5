"""Opt-in sampling profiler for the bridge's gunicorn worker (``bench/load.py --profile``).

py-spy cannot read this machine's processes (no ptrace access in the container), so the load
bench puts this folder on the bridge's ``PYTHONPATH``; Python imports ``sitecustomize`` at
start-up, and when ``BENCH_PROFILE_OUT`` is set, every forked worker starts one daemon thread
that, ``BENCH_PROFILE_HZ`` times a second, records the innermost frames of every other thread
that is not parked in a known wait, and the CPU each kind of thread has used so far (from
``/proc/self/task``). Both go to ``$BENCH_PROFILE_OUT.<pid>`` every few seconds.

``BENCH_TRACEMALLOC_OUT`` (``bench/soak.py --tracemalloc``) instead traces allocations in the
worker and, every ``BENCH_TRACEMALLOC_EVERY_S``, writes the source lines whose live memory grew
most since the first snapshot (taken once the first calls have run), and the growth of
gc-tracked objects by type, to ``$BENCH_TRACEMALLOC_OUT.<pid>``: the owner of a slow growth.

Nothing of this is loaded in production: the folder is only ever on the path of a
benchmarked bridge.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from pathlib import Path
from types import FrameType

# Leaf frames where a thread waits rather than runs (sockets, locks, conditions, sleeps).
_IDLE = (
    "threading.py:wait",
    "threading.py:_wait_for_tstate_lock",
    "selectors.py:select",
    "socket.py:accept",
    "queue.py:get",
    "simple_websocket/ws.py:_thread",
    "bridge/telephony/stream_socket.py:_wait_readable",
    "sync/connection.py:recv_events",
    "gthread.py:run",
    "gthread.py:wait_for_and_dispatch",
    "ssl.py:recv",
    "sync/messages.py:get_next_frame",
    "futures/thread.py:_worker",
)
_DEPTH = 6


def _kind(name: str) -> str:
    if ":" in name:
        return name.split(":", 1)[0]
    if name.endswith(")") and "(" in name:
        return name[name.rindex("(") + 1 : -1]
    return name.rstrip("0123456789_-") or name


_SEEN: dict[int, tuple[str, float]] = {}  # native thread id → (kind, CPU seconds so far)


def _thread_cpu() -> dict[str, float]:
    """CPU seconds per kind of thread, dead threads included (last reading before they ended)."""
    tick = os.sysconf("SC_CLK_TCK")
    for thread in threading.enumerate():
        tid = thread.native_id
        if tid is None:
            continue
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        _SEEN[tid] = (_kind(thread.name), (int(fields[11]) + int(fields[12])) / tick)
    out: dict[str, float] = {}
    for kind, seconds in _SEEN.values():
        out[kind] = out.get(kind, 0.0) + seconds
    return out


def _run(path: str, hz: float) -> None:
    me = threading.get_ident()
    stacks: collections.Counter[str] = collections.Counter()
    samples = 0
    last_dump = time.monotonic()
    # Exited threads' CPU is lost from /proc/self/task; keep the highest seen per kind.
    while True:
        time.sleep(1.0 / hz)
        names = {t.ident: t.name for t in threading.enumerate()}
        samples += 1
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            parts: list[str] = []
            f: FrameType | None = frame
            while f is not None and len(parts) < _DEPTH:
                code = f.f_code
                short = "/".join(code.co_filename.rsplit("/", 2)[-2:])
                parts.append(f"{short}:{code.co_name}:{f.f_lineno}")
                f = f.f_back
            leaf = parts[0].rsplit(":", 1)[0] if parts else ""
            if any(leaf.endswith(idle) for idle in _IDLE):
                continue
            stacks[f"{_kind(names.get(ident, '?'))};" + ";".join(reversed(parts))] += 1
        now = time.monotonic()
        if now - last_dump > 1.0:
            last_dump = now
            cpu = _thread_cpu()
            lines = [f"# samples {samples} at {hz} Hz"]
            lines += [f"cpu {kind} {seconds:.2f}" for kind, seconds in sorted(cpu.items())]
            lines += [f"{count} {stack}" for stack, count in stacks.most_common(400)]
            Path(f"{path}.{os.getpid()}").write_text("\n".join(lines) + "\n")


def _trace(path: str, every_s: float) -> None:
    import gc
    import tracemalloc

    def by_type() -> collections.Counter[str]:
        return collections.Counter(type(o).__qualname__ for o in gc.get_objects())

    time.sleep(every_s)  # past start-up and the first calls: caches, pools, imports
    gc.collect()
    first, first_types = tracemalloc.take_snapshot(), by_type()
    rounds = 0
    while True:
        time.sleep(every_s)
        rounds += 1
        gc.collect()
        stats = tracemalloc.take_snapshot().compare_to(first, "lineno")
        types = by_type()
        types.subtract(first_types)
        current, peak = tracemalloc.get_traced_memory()
        lines = [f"# round {rounds}: traced {current / 2**20:.1f} MiB (peak {peak / 2**20:.1f})"]
        lines += [
            f"{stat.size_diff / 1024:+.1f} KiB {stat.count_diff:+d} {stat}" for stat in stats[:30]
        ]
        lines.append("# gc-tracked objects by type, growth since the first snapshot")
        lines += [f"{count:+d} {name}" for name, count in types.most_common(25)]
        Path(f"{path}.{os.getpid()}").write_text("\n".join(lines) + "\n")


def _start() -> None:
    path = os.environ.get("BENCH_PROFILE_OUT")
    if path:
        hz = float(os.environ.get("BENCH_PROFILE_HZ", "100"))
        threading.Thread(target=_run, args=(path, hz), name="bench-profiler", daemon=True).start()
    trace = os.environ.get("BENCH_TRACEMALLOC_OUT")
    if trace:
        import tracemalloc

        tracemalloc.start(1)  # one frame: cheap enough to run under calls
        every = float(os.environ.get("BENCH_TRACEMALLOC_EVERY_S", "60"))
        threading.Thread(
            target=_trace, args=(trace, every), name="bench-trace", daemon=True
        ).start()


if os.environ.get("BENCH_PROFILE_OUT") or os.environ.get("BENCH_TRACEMALLOC_OUT"):
    os.register_at_fork(after_in_child=_start)
