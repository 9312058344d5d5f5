"""The speaker's audio waiting for an engine connection: bounded, oldest dropped first.

Every engine needs it: audio queued by ``send_audio`` (never blocking) until the writer can send it,
held while a connection reopens, the newest few seconds at most so a dead engine cannot grow memory.
Not thread-safe on its own: the owning session guards it with its lock.
(``bridge.engines.openai.translate_engine`` still keeps its own copy of this logic; it could use
this class.)
"""

from __future__ import annotations

from collections import deque

import numpy as np

from bridge.audio.pcm import Samples


class HeldAudio:
    def __init__(self, capacity_samples: int) -> None:
        self._capacity = capacity_samples
        self._chunks: deque[Samples] = deque()
        self._samples = 0

    def __len__(self) -> int:
        """Samples held."""
        return self._samples

    def append(self, samples: Samples) -> int:
        """Hold ``samples``; returns how many of the oldest were dropped to make room."""
        self._chunks.append(samples)
        self._samples += len(samples)
        dropped = 0
        while self._samples > self._capacity and len(self._chunks) > 1:
            old = self._chunks.popleft()
            self._samples -= len(old)
            dropped += len(old)
        return dropped

    def take(self, maximum: int) -> Samples:
        """The oldest whole chunks, at least one and up to ``maximum`` samples, joined."""
        batch: list[Samples] = []
        size = 0
        while self._chunks and (not batch or size + len(self._chunks[0]) <= maximum):
            chunk = self._chunks.popleft()
            batch.append(chunk)
            size += len(chunk)
        self._samples -= size
        return np.concatenate(batch) if batch else np.zeros(0, dtype=np.int16)

    def put_back(self, samples: Samples) -> None:
        """Return what :meth:`take` gave, unsent, to the front (order kept)."""
        if len(samples):
            self._chunks.appendleft(samples)
            self._samples += len(samples)

    def clear(self) -> None:
        self._chunks.clear()
        self._samples = 0
