"""bridge.engines.held_audio: bounded, oldest first out, order kept when put back."""

from __future__ import annotations

import numpy as np

from bridge.audio.pcm import Samples
from bridge.engines.held_audio import HeldAudio


def chunk(start: int, n: int = 160) -> Samples:
    return np.arange(start, start + n, dtype=np.int16)


def test_holds_the_newest_audio_and_counts_what_it_drops() -> None:
    held = HeldAudio(capacity_samples=400)
    assert held.append(chunk(0)) == 0
    assert held.append(chunk(160)) == 0
    assert held.append(chunk(320)) == 160  # 480 > 400: the oldest chunk goes
    assert len(held) == 320
    assert held.take(10_000)[0] == 160


def test_take_gives_whole_chunks_up_to_a_maximum_and_put_back_keeps_order() -> None:
    held = HeldAudio(capacity_samples=10_000)
    for i in range(4):
        held.append(chunk(160 * i))
    batch = held.take(maximum=400)
    assert len(batch) == 320 and len(held) == 320
    held.put_back(batch)
    assert np.array_equal(held.take(10_000), np.arange(0, 640, dtype=np.int16))
    assert len(held) == 0 and len(held.take(100)) == 0
