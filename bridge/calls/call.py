"""One interpreted call: two legs, two translation sessions, its transcript and its end.

State changes happen under the call's lock; nothing slow (network) runs while it is held.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bridge.audio.mixer import rms
from bridge.audio.pcm import Pcm16
from bridge.calls.events import CallEvent, DelayMeasured, TextFragment
from bridge.calls.leg import CallLeg, LegConfig, Role
from bridge.calls.redact import Redactor
from bridge.calls.transcript import DirectionTranscript
from bridge.engines.contract import Direction, TextKind, TranslationSession
from bridge.ops.logs import call_logger, log_transcript
from bridge.ops.metrics import Metrics

EndReason = Literal[
    "caller_hung_up",
    "agent_hung_up",
    "agent_busy",
    "agent_no_answer",
    "agent_machine",
    "agent_failed",
    "agent_canceled",
    "dial_failed",
    "engine_unavailable",
    "engine_failed",
    "engine_out_of_credit",
    "stream_rejected",
    # The party's Media Stream stopped taking our audio (WRITE_STALL_S in
    # bridge/telephony/stream_socket.py).
    "stream_stalled",
    "time_limit",
    "shutdown",
    # Several instances (REDIS_URL): the instance holding the other leg went away.
    "instance_lost",
]
# A long call produces many small fragments; keep the newest (persistence is a later issue).
MAX_TRANSCRIPT_FRAGMENTS = 50_000
DIRECTION_OF_SPEAKER: dict[Role, Direction] = {
    "caller": "caller_to_agent",
    "agent": "agent_to_caller",
}
LISTENER_OF: dict[Direction, Role] = {"caller_to_agent": "agent", "agent_to_caller": "caller"}
# Speech onset for the delay measurement: a frame this loud (~-38 dBFS) after this long quiet.
ONSET_RMS = 400.0
ONSET_QUIET_MS = 400


@dataclass(frozen=True, slots=True)
class TranscriptFragment:
    direction: Direction
    kind: TextKind
    text: str
    offset_ms: int


class Call:
    """A caller's call and the agent leg the bridge dialled for it."""

    def __init__(
        self,
        *,
        caller_sid: str,
        caller_number: str,
        dialled_number: str,
        caller_language: str,
        agent_language: str,
        metrics: Metrics,
        leg_config: LegConfig | None = None,
        publish: Callable[[CallEvent], None] | None = None,
        leg_factory: Callable[[Role], CallLeg] | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.sid = caller_sid
        self.caller_number = caller_number
        self.dialled_number = dialled_number
        self.caller_language = caller_language
        self.agent_language = agent_language
        self.log = call_logger(__name__, caller_sid, "call")
        self.lock = threading.Lock()
        self.started_at = time.monotonic()
        # Several instances (bridge/cluster/book.py) pass legs that send what this instance does
        # not hold to the instance that does.
        make_leg = leg_factory or (lambda role: CallLeg(caller_sid, role, metrics, leg_config))
        self.legs: dict[Role, CallLeg] = {"caller": make_leg("caller"), "agent": make_leg("agent")}
        self.sessions: dict[Direction, TranslationSession] = {}
        self.agent_sid: str | None = None
        self.agent_sid_known = threading.Event()
        self.caller_stream_seen = threading.Event()  # Twilio reached our <Connect><Stream>
        self.caller_notice_pending = False
        self.agent_status = "dialling"
        self.agent_answered = False
        self.caller_live = True
        self.agent_live = False
        self.ended = threading.Event()
        self.end_reason: EndReason | None = None
        self.end_detail = ""  # the cause behind end_reason, for logs and (later) call records
        self.transcript: deque[TranscriptFragment] = deque(maxlen=MAX_TRANSCRIPT_FRAGMENTS)
        self._metrics = metrics
        self._publish = publish or (lambda event: None)
        self._segments: dict[Direction, DirectionTranscript] = {
            d: DirectionTranscript(caller_sid, d, redactor) for d in LISTENER_OF
        }
        # Delay measurement: when each speaker last started talking after a pause, until the
        # listener hears the first translated audio after it.
        self._speaking: dict[Role, bool] = {"caller": False, "agent": False}
        self._quiet_ms: dict[Role, int] = {"caller": ONSET_QUIET_MS, "agent": ONSET_QUIET_MS}
        self._onset: dict[Direction, float | None] = {d: None for d in LISTENER_OF}
        for direction, role in LISTENER_OF.items():
            self.legs[role].on_heard = self._heard_callback(direction)

    def role_of(self, call_sid: str) -> Role | None:
        if call_sid == self.sid:
            return "caller"
        if self.agent_sid is not None and call_sid == self.agent_sid:
            return "agent"
        return None

    def set_agent_sid(self, agent_sid: str) -> bool:
        """Record the dialled leg's CallSid; False if the call had already ended."""
        with self.lock:
            self.agent_sid = agent_sid
            self.agent_live = not self.ended.is_set()
            self.agent_sid_known.set()
            return self.agent_live

    def mark_ended(self, reason: EndReason, detail: str = "") -> bool:
        """Claim the teardown: True exactly once per call."""
        with self.lock:
            if self.ended.is_set():
                return False
            self.end_reason = reason
            self.end_detail = detail
            self.ended.set()
            return True

    def inbound(self, speaker: Role, audio: Pcm16) -> None:
        """Audio a party spoke: into the session that translates it for the other party, and
        quietly into the other party's ear. Both paths are echo-guarded: while our translation
        plays to the speaker, what their microphone picks up may be that translation."""
        if self.ended.is_set():
            return
        audio = self.legs[speaker].guard_input(audio)
        self._track_onset(speaker, audio)
        session = self.sessions.get(DIRECTION_OF_SPEAKER[speaker])
        if session is not None:
            session.send_audio(audio)
        self.legs[LISTENER_OF[DIRECTION_OF_SPEAKER[speaker]]].hear_other_party(audio)

    def offset_ms(self) -> int:
        """Milliseconds since the call started."""
        return int(1000 * (time.monotonic() - self.started_at))

    def add_text(self, direction: Direction, kind: TextKind, text: str) -> None:
        """A fragment from the engine. Only its masked form goes anywhere (REDACT): the
        transcript segment masks its whole text on closing, and the live part shown now holds
        back a number that the next fragment may continue."""
        offset_ms = self.offset_ms()
        with self.lock:
            closed = self._segments[direction].add(kind, text, offset_ms)
            shown = self._segments[direction].live(kind, text, offset_ms)
        if closed is not None:
            self._publish(closed)
        if shown:
            self._show(direction, kind, shown, offset_ms)

    def _show(self, direction: Direction, kind: TextKind, text: str, offset_ms: int) -> None:
        self.transcript.append(TranscriptFragment(direction, kind, text, offset_ms))
        log_transcript(self.sid, direction, kind, text, offset_ms)
        self._publish(TextFragment(self.sid, direction, kind, text, offset_ms))

    def _release_held(self, now_ms: int | None) -> None:
        with self.lock:
            held = [(d, k, t) for d, s in self._segments.items() for k, t in s.release_held(now_ms)]
        offset_ms = self.offset_ms()
        for direction, kind, text in held:
            self._show(direction, kind, text, offset_ms)

    def tick(self) -> None:
        """Close segments whose pause has lasted long enough (the watchdog calls this)."""
        now_ms = self.offset_ms()
        self._release_held(now_ms)
        with self.lock:
            closed = [s.tick(now_ms) for s in self._segments.values()]
        for segment in closed:
            if segment is not None:
                self._publish(segment)

    def flush_transcript(self) -> None:
        """The call is over: show the held live text and close the segments still open."""
        self._release_held(None)
        with self.lock:
            closed = [s.flush() for s in self._segments.values()]
        for segment in closed:
            if segment is not None:
                self._publish(segment)

    def _track_onset(self, speaker: Role, audio: Pcm16) -> None:
        """A crude voice-activity edge: loud after a pause is the start of an utterance.
        Called from the speaker's stream thread only."""
        frame_ms = int(1000 * len(audio.samples) / audio.rate_hz)
        if rms(audio.samples) < ONSET_RMS:
            self._quiet_ms[speaker] += frame_ms
            if self._quiet_ms[speaker] >= ONSET_QUIET_MS:
                self._speaking[speaker] = False
            return
        self._quiet_ms[speaker] = 0
        if not self._speaking[speaker]:
            self._speaking[speaker] = True
            direction = DIRECTION_OF_SPEAKER[speaker]
            with self.lock:
                if self._onset[direction] is None:
                    self._onset[direction] = time.monotonic()

    def _heard_callback(self, direction: Direction) -> Callable[[float], None]:
        def heard(heard_from: float) -> None:
            with self.lock:
                onset = self._onset[direction]
                if onset is None or heard_from < onset:
                    return
                self._onset[direction] = None
                delay_ms = int(1000 * (heard_from - onset))
                self._segments[direction].note_delay(delay_ms)
            self._metrics.translation_delay.labels(direction).observe(delay_ms / 1000)
            self._publish(DelayMeasured(self.sid, direction, delay_ms, self.offset_ms()))

        return heard

    def transcript_text(self, direction: Direction, kind: TextKind) -> str:
        """Fragments concatenated as-is (the engine's deltas carry their own spacing)."""
        return "".join(
            f.text for f in list(self.transcript) if f.direction == direction and f.kind == kind
        )
