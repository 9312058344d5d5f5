"""The translation engine seam: one session per direction of a call.

The contract every engine (``bridge/<vendor>_engine.py``, chosen by ``ENGINE``) keeps:

Audio in
    The speaker's leg calls :meth:`TranslationSession.send_audio` with :class:`Pcm16` at 8 kHz
    (Twilio's μ-law, decoded), in 20 ms frames, continuously: silence is sent too. Converting
    to the vendor's format (resampling, μ-law, base64) is the session's job, with resamplers it
    owns (one per session: they are stateful).
Audio out
    :meth:`SessionListener.on_audio` takes :class:`Pcm16` at whatever rate the engine produces;
    the listener's leg resamples. Rates the leg plays: 8 kHz (as is), 16 kHz (2:1) and 24 kHz
    (3:1), each through an anti-aliasing filter of ~2.4 ms delay; any other rate is refused
    with ``ValueError``, so an engine whose vendor speaks another rate (48 kHz) asks the vendor
    for one of these, or converts.
    ``received_at`` is ``time.monotonic()`` when the bytes arrived from the vendor: latency is
    measured from it.
Text
    :meth:`SessionListener.on_text` with ``source`` (the speaker's words) or ``translation``;
    fragments concatenate as they come (the engine adds any spaces its vendor leaves out).
Lifecycle
    ``engine.session(spec, listener)`` makes a session and opens nothing; :meth:`start` begins
    connecting in the background (audio sent before it is ready is held, never blocks);
    :meth:`close` ends it the vendor's documented way (flush, then close), is idempotent, safe
    from any thread, and never blocks on the network.
Reconnection and errors
    The session's own job: a dropped connection is retried/replaced with backoff while the
    speaker's newest few seconds are held and sent once it is back. A session calls
    :meth:`SessionListener.on_failed` at most once, and only when it cannot go on: with
    ``opened=False`` if it never opened (bad key, refused, unreachable: the call is told the
    interpreter is unavailable), with ``opened=True`` if it died past every retry (the call is
    ended). A reason made by :func:`out_of_credit` says the vendor account ran out of credit
    (the call ends politely, recorded as ``engine_out_of_credit``). Nothing else is an error to
    the listener.
Threads
    Listener methods are called from the session's own threads, never from the thread that
    called ``send_audio``; the listener never blocks them for long.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from bridge.audio.pcm import Pcm16

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
    """What one direction of a call needs: who it belongs to and what language to speak.

    ``input_language``: the speaker's language when the call knows it (the other direction's
    output language); ``None`` when it does not, and engines that auto-detect ignore it.
    """

    call_sid: str
    direction: Direction
    output_language: str
    input_language: str | None = None


class SessionListener(Protocol):
    """Where a session delivers its output. Called from the session's own threads."""

    def on_audio(self, audio: Pcm16, received_at: float) -> None:
        """Translated audio for the listener (8, 16 or 24 kHz); ``received_at`` is
        ``time.monotonic()`` when it arrived from the vendor."""

    def on_text(self, kind: TextKind, text: str) -> None:
        """A transcript fragment: the speaker's words (``source``) or the translation."""

    def on_failed(self, reason: str, *, opened: bool) -> None:
        """The session cannot go on: it never opened (``opened=False``: bad key, refused,
        unreachable) or it died past every retry (``opened=True``). Called at most once. A
        reason made by :func:`out_of_credit` says the vendor account ran out of credit."""


class TranslationSession(Protocol):
    def start(self) -> None:
        """Begin connecting in the background; audio sent before it is ready is queued."""

    def send_audio(self, audio: Pcm16) -> None:
        """Queue the speaker's audio (8 kHz PCM16, 20 ms frames). Never blocks on the network."""

    def close(self) -> None:
        """Flush and end the session the vendor's way; idempotent, from any thread, and
        non-blocking (the session's threads finish the goodbye)."""


class Engine(Protocol):
    name: str

    def session(self, spec: SessionSpec, listener: SessionListener) -> TranslationSession:
        """A new, not yet started session for one direction of a call."""
