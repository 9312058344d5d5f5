"""The load benchmark on one short call through the real bridge: it measures what it says.

Performance itself is shown by ``bench/load.py``, not asserted here: this only checks that one
call yields latencies both ways, utterance starts, frame counts and the worker's figures, and
that the command line pins, measures and writes its result files, so the benchmark cannot
silently rot. The arithmetic is tested on made-up data in test_load_stats.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.load import run_load
from tests.bridge_process import ROOT, free_port


@pytest.mark.slow
def test_one_call_is_measured_both_ways(tmp_path: Path) -> None:
    result = asyncio.run(run_load(1, 3.0, free_port(), tmp_path))
    assert result.lat_in_own, "no append was matched to the frames it carries"
    assert all(own <= raw for own, raw in zip(result.lat_in_own, result.lat_in_raw, strict=True))
    assert result.lat_out, "no delta was matched to its first frame"
    assert result.start_out and result.start_played, "no utterance start was measured"
    assert result.expected > 0 and result.heard > 0
    assert result.cpu_per_call_min > 0 and result.threads >= result.idle_threads > 0


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pins to two cores")
def test_the_command_pins_and_writes_its_results(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))[:2]
    done = subprocess.run(
        [
            sys.executable,
            "bench/load.py",
            "--calls",
            "1",
            "--seconds",
            "3",
            "--bridge-cpus",
            str(cpus[0]),
            "--generator-cpus",
            str(cpus[1]),
            "--out",
            str(tmp_path / "load"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    pinned = re.search(
        r"master \d+ on CPUs (\S+), worker \d+ on CPUs (\S+); generator \d+ "
        r"on CPUs (\S+)",
        done.stderr,
    )
    assert pinned is not None, done.stderr[-2000:]
    assert pinned.groups() == (str(cpus[0]), str(cpus[0]), str(cpus[1]))
    data = json.loads((tmp_path / "load.json").read_text())
    assert data["meta"]["command"].startswith("bench/load.py --calls 1")
    (run,) = data["runs"]
    assert run["n"] == 1 and run["tree"] == "current"
    assert run["lat_out"]["count"] > 0 and run["lat_in_own"]["count"] > 0
    assert "| current " in (tmp_path / "load.md").read_text()
