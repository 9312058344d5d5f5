"""The simulator's end-of-call report: outcome, delays, frame counts, protocol violations.

Pure: figures in, text and JSON out. The delay of a direction is measured on audio alone, the
way a listener would: from the speaker's speech onset (the first 20 ms frame of what they sent
above a level) to the first frame the listener *heard* (played out of the simulated Twilio
buffer, the same time a ``mark`` echo confirms to the bridge) that is no more than 10 dB below
what the speaker was saying in the 200 ms before. The bridge's passthrough of the speaker's own
voice (``PASSTHROUGH_DB``, -14 dB by default, lower while translation plays) is a copy of those
frames at least 14 dB down, so it never counts as the translation; the relay's copy at full
level, a translation, or anything heard while the speaker is silent does.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bridge.audio.pcm import TWILIO_FRAME_BYTES, ulaw_to_pcm16

FRAME_S = 0.020
SPEECH_FLOOR_DBFS = -45.0  # quieter than this is line noise, not speech
SILENCE_DBFS = -120.0
HEARD_MARGIN_DB = 10.0
# The bridge mixes the speaker's own voice into the listener's frames within tens of ms (it sends
# them at most 40 ms ahead of playback); 200 ms covers that lag with room to spare.
PASSTHROUGH_WINDOW_FRAMES = 10
DIRECTIONS = ("caller_to_agent", "agent_to_caller")


def frame_levels_dbfs(ulaw: bytes) -> list[float]:
    """RMS level of each whole 20 ms frame, in dBFS (digital silence is -120)."""
    n = len(ulaw) // TWILIO_FRAME_BYTES
    if n == 0:
        return []
    samples = ulaw_to_pcm16(ulaw[: n * TWILIO_FRAME_BYTES]).samples.astype(np.float64)
    rms = np.sqrt((samples.reshape(n, TWILIO_FRAME_BYTES) ** 2).mean(axis=1))
    return [
        float(v) for v in np.maximum(20 * np.log10(np.maximum(rms, 1e-9) / 32768.0), SILENCE_DBFS)
    ]


def speech_onset(levels: list[float]) -> int | None:
    """Index of the first frame above the speech floor (None: the speaker never spoke)."""
    return next((i for i, level in enumerate(levels) if level > SPEECH_FLOOR_DBFS), None)


def first_heard(heard: list[float], speaker: list[float], from_index: int) -> int | None:
    """Index of the first heard frame at or after ``from_index`` that carries the other party's
    words: above the speech floor and no more than ``HEARD_MARGIN_DB`` below the loudest frame
    the speaker sent in the ``PASSTHROUGH_WINDOW_FRAMES`` before it. ``speaker`` holds the
    speaker's frame levels on the same timeline (-120 where they sent nothing)."""
    for i in range(max(0, from_index), len(heard)):
        if heard[i] <= SPEECH_FLOOR_DBFS:
            continue
        recent = speaker[max(0, i - PASSTHROUGH_WINDOW_FRAMES) : i + 1]
        if heard[i] >= max(recent, default=SILENCE_DBFS) - HEARD_MARGIN_DB:
            return i
    return None


@dataclass
class LegStats:
    """One phone leg as the simulated carrier saw it."""

    party: str
    call_sid: str | None = None
    final_status: str | None = None
    prompts: list[str] = field(default_factory=list)
    frames_sent: int = 0
    frames_received: int = 0
    seconds_received: float = 0.0
    marks_received: int = 0
    marks_echoed: int = 0
    clears: int = 0
    violations: list[str] = field(default_factory=list)


@dataclass
class DirectionDelay:
    """Speech onset to first heard audio for one direction (seconds since the call began)."""

    direction: str
    connected: bool = False  # the speaker's stream ran (else there is nothing to measure)
    onset_s: float | None = None
    heard_s: float | None = None
    delay_ms: int | None = None
    bridge_delay_ms: int | None = None  # what the bridge itself reported (admin API), if known


@dataclass
class Report:
    """Everything the simulator prints at the end, and writes as report.txt / report.json."""

    bridge_url: str
    outcome: str
    ok: bool
    engine: str | None = None
    end_reason: str | None = None
    menu_answer: str | None = None
    duration_s: float = 0.0
    legs: list[LegStats] = field(default_factory=list)
    delays: list[DirectionDelay] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[str]:
        return [f"{leg.party}: {v}" for leg in self.legs for v in leg.violations]

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["violations"] = self.violations
        return body

    def to_text(self) -> str:
        """The human report: a dozen lines, most important first."""
        lines = [f"Outcome: {self.outcome}" + ("" if self.ok else "  [PROBLEM]")]
        lines.append(f"Bridge: {self.bridge_url}  engine: {self.engine or 'unknown (no API)'}")
        if self.end_reason:
            lines.append(f"Bridge's end reason: {self.end_reason}")
        if self.menu_answer:
            lines.append(f"Language menu answered with: {self.menu_answer}")
        lines.append(f"Call length: {self.duration_s:.1f} s")
        lines.append("Delay, speech onset to first heard audio:")
        lines.extend(_delay_line(d, self.engine) for d in self.delays)
        lines.append("Frames (20 ms) sent / received, marks received / echoed, clears:")
        for leg in self.legs:
            lines.append(
                f"  {leg.party}: {leg.frames_sent} / {leg.frames_received}"
                f" ({leg.seconds_received:.1f} s heard), marks {leg.marks_received} /"
                f" {leg.marks_echoed}, clears {leg.clears}, final status {leg.final_status}"
            )
            for prompt in leg.prompts:
                lines.append(f"    heard prompt: {prompt}")
        violations = self.violations
        lines.append(f"Protocol violations: {len(violations) or 'none'}")
        lines.extend(f"  {v}" for v in violations)
        lines.extend(f"Note: {note}" for note in self.notes)
        return "\n".join(lines) + "\n"

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"


def _delay_line(delay: DirectionDelay, engine: str | None) -> str:
    name = delay.direction.replace("_to_", " → ")
    if not delay.connected:
        return f"  {name}: not measured, the speaker's stream never ran"
    if delay.onset_s is None:
        return f"  {name}: the speaker's audio has no speech"
    if delay.delay_ms is None:
        return f"  {name}: speech at {delay.onset_s:.2f} s, nothing heard by the listener"
    label = " (relay: the original audio, no translation)" if engine == "relay" else ""
    bridge = (
        f"; the bridge measured {delay.bridge_delay_ms} ms"
        if delay.bridge_delay_ms is not None
        else ""
    )
    return (
        f"  {name}: {delay.delay_ms} ms{label} (speech at {delay.onset_s:.2f} s,"
        f" heard at {delay.heard_s:.2f} s{bridge})"
    )
