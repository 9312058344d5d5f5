"""The translation engine seam: one session per direction of a call.

A session takes the speaker's 8 kHz audio and gives the listener translated audio plus source
and translated text. Sessions are non-blocking to feed (``send_audio`` only queues), own their
resamplers and threads, report a fatal fault once through ``on_failed``, and ``close()`` is
idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from bridge.audio import Pcm16

Direction = Literal["caller_to_agent", "agent_to_caller"]
TextKind = Literal["source", "translation"]


# ``on_failed`` reasons that start with this say the vendor account has run out of credit
# (tokens, balance, quota): not a fault of the call or the bridge, so the call ends politely
# and its record says why (``engine_out_of_credit``). Any other reason is a fault.
OUT_OF_CREDIT = "out of credit"


def out_of_credit(detail: str) -> str:
    """An ``on_failed`` reason saying the vendor account ran out of credit, with the detail."""
    return f"{OUT_OF_CREDIT}: {detail}" if detail else OUT_OF_CREDIT


def is_out_of_credit(reason: str) -> bool:
    return reason.startswith(OUT_OF_CREDIT)


class EngineUnavailable(RuntimeError):
    """A translation session could not be opened (bad key, quota, host unreachable)."""


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """What one direction of a call needs: who it belongs to and what language to speak."""

    call_sid: str
    direction: Direction
    output_language: str


class SessionListener(Protocol):
    """Where a session delivers its output. Called from the session's own threads."""

    def on_audio(self, audio: Pcm16, received_at: float) -> None:
        """Translated audio for the listener; ``received_at`` is ``time.monotonic()``."""

    def on_text(self, kind: TextKind, text: str) -> None:
        """A transcript fragment: the speaker's words (``source``) or the translation."""

    def on_failed(self, reason: str, *, opened: bool) -> None:
        """The session cannot go on: it never opened (``opened=False``: bad key, refused,
        unreachable) or it died past every retry. A reason made by :func:`out_of_credit` says
        the vendor account ran out of credit."""


class TranslationSession(Protocol):
    def start(self) -> None:
        """Begin connecting in the background; audio sent before it is ready is queued."""

    def send_audio(self, audio: Pcm16) -> None:
        """Queue the speaker's audio (8 kHz). Never blocks on the network."""

    def close(self) -> None:
        """Flush and end the session; safe to call more than once, from any thread."""


class Engine(Protocol):
    name: str

    def session(self, spec: SessionSpec, listener: SessionListener) -> TranslationSession:
        """A new, not yet started session for one direction of a call."""
