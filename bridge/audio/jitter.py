"""How long an utterance's first translated audio is held back to ride out the engine's jitter.

Engines stream translated speech in chunks (~200 ms from OpenAI) whose arrival wobbles by tens of
milliseconds around real time. Twilio plays what it holds and then plays nothing, so the first
chunk of an utterance must not start playing until the next ones are sure to arrive before the
audio ahead of them has played: a jitter buffer's playout delay. Pure, clock passed in.

What is measured, per chunk after an utterance's first: its *lateness*, how much later than the
earliest chunk of the utterance it arrived, relative to the audio before it (arrival time minus
audio time, compared with that of the chunk that came the most ahead). The utterance's first
chunk may itself be that earliest one, so an utterance held back by the lateness its chunks show
plays them all without a gap. The hold covers a high percentile of the lateness seen lately,
bounded; until enough is seen, the upper bound.
"""

from __future__ import annotations

import math
from collections import deque

# Bounds on the hold: below 40 ms even a steady engine's part-frames leave no slack; above
# 120 ms the delay starts to be heard as the interpreter lagging, and an engine that late is
# not jittering but falling behind (holding longer would not stop it running dry).
HOLD_MIN_S = 0.04
HOLD_MAX_S = 0.12
# Lateness samples older than this are forgotten: the hold follows the network and the
# engine's load as they change during a call, and a single stall stops counting after a while.
WINDOW_S = 20.0
# Before this many samples the estimate is noise: hold the upper bound meanwhile.
MIN_SAMPLES = 5
# The high percentile is estimated as mean + this many standard deviations, never below the
# largest seen: the top percentile of the few dozen chunks a window holds underestimates the
# tail (replaying 120 utterances with +-20 or +-40 ms of jitter, a hold at the 99th percentile
# let Twilio run dry 1 and 3 times; this, never).
SPREAD_SIGMAS = 3.0


class JitterHold:
    """The playout delay for the next utterance, from the lateness of the chunks seen lately."""

    def __init__(self, min_s: float = HOLD_MIN_S, max_s: float = HOLD_MAX_S) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self._samples: deque[tuple[float, float]] = deque()  # (arrived at, lateness)

    @property
    def samples(self) -> int:
        return len(self._samples)

    def record(self, lateness_s: float, now: float) -> None:
        """A chunk arrived ``lateness_s`` later than the earliest of its utterance."""
        if self.max_s <= 0.0:
            return
        # Anything beyond the bound is not held for anyway: clipped, so that one stall does
        # not swamp the spread for the whole window.
        self._samples.append((now, min(max(lateness_s, 0.0), self.max_s)))
        while self._samples and self._samples[0][0] < now - WINDOW_S:
            self._samples.popleft()

    def hold_s(self, extra_s: float = 0.0) -> float:
        """How long to hold an utterance's first audio back: the lateness to cover, plus
        ``extra_s`` (what the caller needs beyond the jitter itself), bounded."""
        if self.max_s <= 0.0:
            return 0.0
        if len(self._samples) < MIN_SAMPLES:
            return self.max_s
        late = [s for _, s in self._samples]
        mean = sum(late) / len(late)
        spread = math.sqrt(sum((s - mean) ** 2 for s in late) / len(late))
        cover = max(*late, mean + SPREAD_SIGMAS * spread)
        return min(self.max_s, max(self.min_s, cover + extra_s))
