"""``ENGINE=bland``: Bland's Live Translation API, ``twilio_ulaw`` protocol.

One :class:`~bridge.engines.bland.session.BlandTranslationSession` per direction of a call. Its
*writer* thread owns everything sent upstream: it opens
:class:`~bridge.engines.bland.link.BlandLink`\\ s (one Bland session each: REST create, single-use
socket, DELETE at the end), sends the speaker's audio as Twilio media frames, replaces a link that
dropped (Bland cannot resume one: a new session is created), and rotates before Bland's 30-minute
session limit at a quiet moment.

Why ``twilio_ulaw``: the speaker's audio is Twilio μ-law already (decoding and re-encoding it is
exact table work, no resampling), and Bland's answer is 8 kHz μ-law the leg plays as it is;
``pcm16`` would send twice the bytes and return 16 kHz the bridge would have to resample.

Concurrency cap: Bland allows 3 concurrent sessions per organization (pending ones count), so
the process holds a bounded semaphore of ``BLAND_MAX_SESSIONS`` slots. A session that finds no
slot waits ``SLOT_WAIT_S`` (a call that just ended may be releasing its slots), then fails
unopened with a reason naming the cap. A rotation that finds no spare slot switches
break-before-make at a quiet moment (the speaker's audio is held meanwhile, never lost).
"""

from __future__ import annotations

import threading
import time

from bridge.engines.bland.config import BlandConfig
from bridge.engines.bland.link import BlandRest
from bridge.engines.bland.session import BlandTranslationSession, NoSlot
from bridge.engines.contract import (
    SessionListener,
    SessionSpec,
    TranslationSession,
)
from bridge.ops.metrics import Metrics
from bridge.settings.env import Settings

# How long to wait for the other direction to register its language (both are created
# back to back when a call starts, so this is normally instant).
SIBLING_WAIT_S = 0.2


def build(settings: Settings, metrics: Metrics) -> BlandEngine:
    return BlandEngine(settings, metrics)


class BlandEngine:
    name = "bland"

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        config = settings.engine_config
        assert isinstance(config, BlandConfig), "Settings.engine_config is not Bland's"
        self.settings = settings
        self.config = config
        self.metrics = metrics
        self.rest = BlandRest(config.base_url, config.api_key)
        self._slots = threading.BoundedSemaphore(config.max_sessions)
        self._lock = threading.Condition()
        # call SID -> direction -> the language that direction speaks to its listener
        self._outputs: dict[str, dict[str, str]] = {}

    def session(self, spec: SessionSpec, listener: SessionListener) -> TranslationSession:
        with self._lock:
            self._outputs.setdefault(spec.call_sid, {})[spec.direction] = spec.output_language
            self._lock.notify_all()
        return BlandTranslationSession(self, spec, listener)

    def acquire_slot(self, wait_s: float) -> None:
        if wait_s > 0:
            got = self._slots.acquire(timeout=wait_s)
        else:
            got = self._slots.acquire(blocking=False)
        if not got:
            raise NoSlot(
                f"Bland concurrency cap reached (BLAND_MAX_SESSIONS={self.config.max_sessions})"
            )

    def release_slot(self) -> None:
        self._slots.release()

    def source_language(self, spec: SessionSpec) -> str:
        """What the speaker speaks: the other direction's output language.

        ``SessionSpec`` names only the listener's language; the speaker's is the one the other
        direction of the same call speaks to them. Without a sibling (a lone session), the
        settings' defaults stand in.
        """
        given = getattr(spec, "input_language", None)
        if isinstance(given, str) and given:
            return given
        other = "agent_to_caller" if spec.direction == "caller_to_agent" else "caller_to_agent"
        deadline = time.monotonic() + SIBLING_WAIT_S
        with self._lock:
            while other not in self._outputs.get(spec.call_sid, {}):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            found = self._outputs.get(spec.call_sid, {}).get(other)
        if found is not None:
            return found
        s = self.settings
        if spec.direction == "caller_to_agent":
            return s.caller_language
        return s.agent_language_for(s.agent_number)

    def forget(self, spec: SessionSpec) -> None:
        with self._lock:
            outputs = self._outputs.get(spec.call_sid)
            if outputs is not None:
                outputs.pop(spec.direction, None)
                if not outputs:
                    del self._outputs[spec.call_sid]

    def count(self, event: str) -> None:
        self.metrics.engine_sessions.labels(event).inc()
