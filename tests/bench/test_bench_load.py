"""The load benchmark's machinery on one short call: it measures what it says it measures.

Performance itself is shown by ``bench/load.py``, not asserted here: this only checks that one
call through the real bridge yields latencies both ways and a frame count, so the benchmark
cannot silently rot.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.load import run_load
from tests.bridge_process import free_port


@pytest.mark.slow
def test_one_call_is_measured_both_ways(tmp_path: Path) -> None:
    result = asyncio.run(run_load(1, 3.0, free_port(), tmp_path))
    assert result.lat_in_own, "no append was matched to the frames it carries"
    assert all(own <= raw for own, raw in zip(result.lat_in_own, result.lat_in_raw, strict=True))
    assert result.lat_out, "no delta was matched to its first frame"
    assert result.expected > 0 and result.heard > 0
    assert result.cpu_per_call_min > 0 and result.worker_threads > 0
