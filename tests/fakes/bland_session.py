"""One session of the Bland stand-in (tests/fakes/bland.py): its REST record, its socket, and
the fake translator that answers each utterance.

The translator segments the speaker's 8 kHz μ-law into utterances like a VAD: an utterance
ends after ``UTTERANCE_GAP_MS`` of silence, when no audio arrived for ``IDLE_END_S`` (the
client stopped sending), or at ``MAX_UTTERANCE_MS``. Each utterance is answered the way Bland
documents it, per utterance: a ``transcript`` event (``original``, ``translation``), the
translated speech as Twilio-shaped ``media`` frames sent at once (faster than real time), then
``tts_complete``. The speech is a tone of ``tone_for(target_language)`` Hz lasting as long as
the utterance's speech, so tests can tell which session reached which listener.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.sync.server import ServerConnection

from tests.fakes.audio import (
    TWILIO_FRAME_BYTES,
    TWILIO_RATE_HZ,
    pcm16_to_ulaw,
    rms,
    sine,
    ulaw_to_pcm16,
)
from tests.fakes.openai_translate import INPUT_WORD, OTHER_WORD, OUTPUT_WORDS, tone_for

SPEECH_RMS = 300.0
UTTERANCE_GAP_MS = 300
MAX_UTTERANCE_MS = 3000
IDLE_END_S = 0.4
TONE_AMPLITUDE = 8000.0


@dataclass
class StandInSession:
    """What the stand-in knows about one Bland session."""

    session_id: str
    token: str  # the secret part of ws_url
    body: dict[str, Any]
    created_at: float
    max_duration_s: float
    status: str = "PENDING"  # PENDING -> ACTIVE -> ENDED
    end_reason: str | None = None
    deleted: bool = False  # the client ended it with DELETE
    connected_at: float | None = None
    ended_at: float | None = None
    received_ulaw: bytearray = field(default_factory=bytearray)
    stop_received: bool = False
    utterances: list[float] = field(default_factory=list)  # speech ms of each one answered
    output_sent_at: list[float] = field(default_factory=list)  # monotonic, per media frame
    connection: ServerConnection | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def source_language(self) -> str:
        return str(self.body["source_language"])

    @property
    def target_language(self) -> str:
        return str(self.body["target_language"])

    @property
    def received_ms(self) -> float:
        with self.lock:
            return 1000.0 * len(self.received_ulaw) / TWILIO_RATE_HZ

    @property
    def ended_cleanly(self) -> bool:
        return self.deleted

    def as_json(self) -> dict[str, Any]:
        """Bland's session object (Get / End Translation Session)."""
        seconds = None
        if self.connected_at is not None and self.ended_at is not None:
            seconds = round(self.ended_at - self.connected_at, 3)
        return {
            "session_id": self.session_id,
            "status": self.status,
            "source_language": self.source_language,
            "target_language": self.target_language,
            "voice_id": self.body.get("voice_id"),
            "audio_protocol": self.body.get("audio_protocol", "pcm16"),
            "sample_rate": self.body.get("sample_rate"),
            "max_duration_seconds": self.body.get("max_duration_seconds", 1800),
            "end_reason": self.end_reason,
            "session_seconds": seconds,
            "billable_minutes": None if seconds is None else max(1, -(-int(seconds) // 60)),
            "created_at": self.created_at,
            "started_at": self.connected_at,
            "ended_at": self.ended_at,
        }

    def end(self, reason: str) -> bool:
        """Mark ended; True if it was not already (the caller then closes the socket)."""
        with self.lock:
            if self.status == "ENDED":
                return False
            self.status = "ENDED"
            self.end_reason = reason
            self.ended_at = time.monotonic()
            return True

    def send(self, message: dict[str, Any]) -> None:
        conn = self.connection
        if conn is None:
            return
        with contextlib.suppress(Exception):  # the client may be gone; nothing to do
            conn.send(json.dumps(message))

    def drop(self) -> None:
        """Close the socket abruptly (no close frame: the client sees 1006)."""
        conn = self.connection
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.socket.shutdown(socket.SHUT_RDWR)


class Translator:
    """Per-connection utterance detection and answers (runs on the connection's threads)."""

    def __init__(self, session: StandInSession, answer_delay_s: float = 0.0) -> None:
        self._s = session
        self._delay_s = answer_delay_s  # Bland's thinking time after an utterance ends
        self._lock = threading.Lock()
        self._speech_ms = 0
        self._silence_ms = 0
        self._last_audio_at = time.monotonic()
        self._phase = 0
        self._stream_sid = "MZ" + session.session_id.replace("-", "")[:32]

    def feed(self, ulaw: bytes) -> None:
        with self._lock:
            self._last_audio_at = time.monotonic()
            for start in range(0, len(ulaw), TWILIO_FRAME_BYTES):
                frame = ulaw[start : start + TWILIO_FRAME_BYTES]
                ms = 1000 * len(frame) // TWILIO_RATE_HZ
                if rms(ulaw_to_pcm16(frame)) > SPEECH_RMS:
                    self._speech_ms += ms
                    self._silence_ms = 0
                elif self._speech_ms:
                    self._silence_ms += ms
                if self._speech_ms and (
                    self._silence_ms >= UTTERANCE_GAP_MS or self._speech_ms >= MAX_UTTERANCE_MS
                ):
                    self._answer()

    def tick(self) -> None:
        """Called periodically: an utterance whose audio stopped coming is over."""
        with self._lock:
            if self._speech_ms and time.monotonic() - self._last_audio_at >= IDLE_END_S:
                self._answer()

    def flush(self) -> None:
        with self._lock:
            if self._speech_ms:
                self._answer()

    def _answer(self) -> None:
        speech_ms, self._speech_ms, self._silence_ms = self._speech_ms, 0, 0
        self._s.utterances.append(speech_ms)
        if self._delay_s > 0:
            timer = threading.Timer(self._delay_s, self._send_answer, args=(speech_ms,))
            timer.daemon = True
            timer.start()
        else:
            self._send_answer(speech_ms)

    def _send_answer(self, speech_ms: int) -> None:
        s = self._s
        words = max(1, speech_ms // 200)
        s.send(
            {
                "type": "transcript",
                "original": (INPUT_WORD * words).strip(),
                "translation": (OUTPUT_WORDS.get(s.target_language, OTHER_WORD) * words).strip(),
            }
        )
        n = TWILIO_RATE_HZ * speech_ms // 1000
        tone = sine(tone_for(s.target_language), n, TWILIO_RATE_HZ, TONE_AMPLITUDE, self._phase)
        self._phase += n
        ulaw = pcm16_to_ulaw(tone)
        for start in range(0, len(ulaw), TWILIO_FRAME_BYTES):
            payload = base64.b64encode(ulaw[start : start + TWILIO_FRAME_BYTES]).decode("ascii")
            s.output_sent_at.append(time.monotonic())
            s.send({"event": "media", "streamSid": self._stream_sid, "media": {"payload": payload}})
        s.send({"type": "tts_complete"})
