"""``ENGINE=soniox``: Soniox real-time translation for text, OpenAI streaming speech to speak it.

One :class:`SonioxTranslationSession` per direction of a call, each with:

* a *writer* thread that owns everything sent to Soniox: it opens :class:`SonioxLink`\\ s (one
  real-time request each: one-way translation into the listener's language, endpoint detection,
  the glossary's ``translation_terms``), sends the speaker's 8 kHz PCM as it is (100 ms binary
  frames), opens a new request when one drops, and ends the last one the documented way (an
  empty frame, then waiting for ``finished``);
* the link's *reader* thread, which turns final tokens into the transcript (``on_text``) and
  hands every translated chunk to the speaker the moment it is final (at an endpoint or a
  sentence end);
* a :class:`~bridge.engines.speech.openai_tts.StreamingSpeaker` thread that speaks those chunks
  in order and streams their 24 kHz audio to the listener (the leg resamples).

``send_audio`` runs on the speaker's Media Stream thread and only queues. Audio that cannot be
sent (a request reopening) is held, the newest ``HOLD_MS`` at most, and sent when one is up.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from openai import OpenAI

from bridge.audio.pcm import TWILIO_RATE_HZ, Pcm16
from bridge.engines.contract import SessionListener, SessionSpec, TranslationSession
from bridge.engines.held_audio import HeldAudio
from bridge.engines.soniox.config import SonioxConfig
from bridge.engines.soniox.link import LinkRefused, LinkState, SonioxLink
from bridge.engines.soniox.wire import (
    ChunkAssembler,
    StartRequest,
    Token,
    TranslationTerm,
)
from bridge.engines.speech.base import ChunkSpeaker
from bridge.engines.speech.openai_tts import OpenAISpeaker
from bridge.engines.speech.soniox_tts import SonioxSpeaker
from bridge.ops.logs import call_logger
from bridge.ops.metrics import Metrics
from bridge.settings.env import ConfigError, Settings
from bridge.settings.glossary import GlossaryFileError, load_glossary

FRAME_SAMPLES = TWILIO_RATE_HZ // 10  # 100 ms per binary frame: the docs' examples send ~120 ms
HOLD_MS = 5000
_HOLD_SAMPLES = TWILIO_RATE_HZ * HOLD_MS // 1000
RECOVERY_BUDGET_S = 15.0
# A request that lived this long worked: its loss starts a fresh recovery budget. One that died
# sooner (say, closed on every start request) continues the budget and backs off further, so a
# server that accepts and drops every request ends the call instead of being retried forever.
STABLE_S = 2.0
_RETRY_DELAYS_S = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
# Soniox closes a request that gets neither audio nor keepalive for 20 s; audio normally flows
# (silence included), so this only fires if the leg stops feeding us.
KEEPALIVE_AFTER_S = 10.0
FINISH_WAIT_S = 5.0
SPEECH_WAIT_S = 10.0
_POLL_S = 0.05


def load_terms(path: Path, source: str, target: str) -> tuple[TranslationTerm, ...]:
    """``translation_terms`` for one direction from the glossary (bridge/settings/glossary.py; the
    settings checked the file at start-up). An absent file means no terms."""
    if not path.is_file():
        return ()
    try:
        pairs = load_glossary(path).terms(source, target)
    except GlossaryFileError as exc:
        raise ConfigError(f"GLOSSARY_FILE: {exc}") from None
    return tuple(TranslationTerm(said, heard) for said, heard in pairs)


def build(settings: Settings, metrics: Metrics) -> SonioxEngine:
    return SonioxEngine(settings, metrics)


def speaker_languages(spec: SessionSpec, settings: Settings) -> tuple[str, ...]:
    """The languages the speaker may speak: the other direction's possible output languages.

    A session does not know which one this call's speaker chose (the caller's menu, the agent
    dialled), so every one configured for that side is hinted and has its glossary terms.
    """
    if spec.direction == "caller_to_agent":
        return tuple(dict.fromkeys((*settings.caller_languages, settings.caller_language)))
    agents = (settings.agent_language, *(code for _, code in settings.agent_languages))
    return tuple(dict.fromkeys(agents))


class SonioxEngine:
    name = "soniox"

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        config: SonioxConfig = settings.engine_config
        self._config = config
        self._openai = (
            OpenAI(api_key=config.tts_api_key, base_url=settings.openai_base_url, max_retries=1)
            if config.tts == "openai"
            else None
        )

    def session(self, spec: SessionSpec, listener: SessionListener) -> TranslationSession:
        sources = speaker_languages(spec, self._settings)
        target = spec.output_language
        terms = (
            load_terms(self._config.glossary_file, source, target)
            for source in sources
            if source != target
        )
        request = StartRequest(
            model=self._config.model,
            target_language=target,
            # Hints bias recognition without restricting it; the listener's language is there
            # because people say names and phrases in it.
            language_hints=tuple(dict.fromkeys((*sources, target))),
            terms=tuple(dict.fromkeys(term for found in terms for term in found)),
            client_reference_id=f"{spec.call_sid}:{spec.direction}",
        )
        return SonioxTranslationSession(
            self._config, self._openai, self._metrics, request, spec=spec, listener=listener
        )


class SonioxTranslationSession:
    """One direction of one call, across however many Soniox requests it takes."""

    def __init__(
        self,
        config: SonioxConfig,
        openai: OpenAI | None,
        metrics: Metrics,
        request: StartRequest,
        *,
        spec: SessionSpec,
        listener: SessionListener,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._request = request
        self._listener = listener
        self._log = call_logger(__name__, spec.call_sid, spec.direction)
        self._tag = (
            f"{spec.call_sid[-6:]}-{'c2a' if spec.direction == 'caller_to_agent' else 'a2c'}"
        )
        self._cond = threading.Condition()
        self._held = HeldAudio(_HOLD_SAMPLES)
        self._closing = False
        self._failed = False
        self._links: list[SonioxLink] = []
        self._trouble_since: float | None = None  # the recovery budget runs from here
        self._quick_losses = 0  # requests in a row that died before STABLE_S
        self._worked = False  # some request lived STABLE_S or answered (on_failed's "opened")
        self._assembler = ChunkAssembler()
        self._tokens_lock = threading.Lock()
        self.speaker = self._speaker(config, openai, spec)
        self._writer = threading.Thread(
            target=self._run_writer, name=f"soniox-writer:{self._tag}", daemon=True
        )

    def _speaker(
        self, config: SonioxConfig, openai: OpenAI | None, spec: SessionSpec
    ) -> ChunkSpeaker:
        def fatal(reason: str) -> None:
            self._fail(reason, opened=True)

        def failure(reason: str) -> None:
            self._count("tts_failed")

        if openai is not None:
            return OpenAISpeaker(
                openai,
                model=config.tts_model,
                voice=config.tts_voice,
                listener=self._listener,
                log=self._log,
                name=self._tag,
                on_failure=failure,
                on_fatal=fatal,
            )
        return SonioxSpeaker(
            url=config.tts_ws_url,
            api_key=config.tts_api_key,
            model=config.tts_model,
            voice=config.tts_voice,
            language=spec.output_language,
            listener=self._listener,
            log=self._log,
            name=self._tag,
            on_failure=failure,
            on_fatal=fatal,
        )

    # -- called by the call -----------------------------------------------------------------

    def start(self) -> None:
        self._writer.start()

    def send_audio(self, audio: Pcm16) -> None:
        with self._cond:
            if self._closing:
                return
            dropped = self._held.append(audio.samples)
            if len(self._held) >= FRAME_SAMPLES:
                self._cond.notify()
        if dropped:
            self._metrics.audio_dropped_seconds.labels("engine_input_held").inc(
                dropped / TWILIO_RATE_HZ
            )

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()

    def join(self, timeout: float) -> None:
        """Wait for every thread of this session to end (teardown and tests)."""
        if self._writer.is_alive() and self._writer is not threading.current_thread():
            self._writer.join(timeout)
        self.speaker.join(timeout)

    # -- writer thread ----------------------------------------------------------------------

    def _run_writer(self) -> None:
        link: SonioxLink | None = None
        try:
            try:
                link = self._open_link()
            except LinkRefused as exc:
                self._fail(f"Soniox request could not open: {exc}", opened=False)
                return
            while link is not None:
                link = self._step(link)
        except Exception:  # noqa: BLE001 - thread boundary: end this call's translation only
            self._log.exception("Soniox writer failed")
            self._fail("translation writer failed", opened=link is not None)
        finally:
            self._shut_down()

    def _step(self, link: SonioxLink) -> SonioxLink | None:
        """One turn of the writer: the link to use next, or None when the session is over."""
        with self._cond:
            if not self._closing and len(self._held) < FRAME_SAMPLES and not link.ended:
                self._cond.wait(_POLL_S)
            closing = self._closing
        if link.state is LinkState.DEAD or (link.ended and not closing):
            return self._replace(link)  # dropped, refused, or finished on Soniox's own account
        if closing:
            self._send_pending(link, minimum=1)
            link.end()
            link.join(FINISH_WAIT_S)
            return None
        if not self._send_pending(link, minimum=FRAME_SAMPLES):
            with self._cond:  # the socket is going: wait for its reader to say so, not spin
                self._cond.wait(_POLL_S)
        self._speak_due()
        if time.monotonic() - link.last_sent_at > KEEPALIVE_AFTER_S:
            link.keepalive()
        return link

    def _send_pending(self, link: SonioxLink, minimum: int) -> bool:
        """Send what is held in frames of 100–200 ms; False if the link refused audio."""
        while True:
            with self._cond:
                if len(self._held) < minimum or not len(self._held):
                    return True
                batch = self._held.take(2 * FRAME_SAMPLES)
            if not link.send_audio(batch.astype("<i2", copy=False).tobytes()):
                with self._cond:  # not sent: back to the front, in order, for the next link
                    self._held.put_back(batch)
                return False

    def _replace(self, dead: SonioxLink) -> SonioxLink | None:
        """The request ended without ``finished``: open another, or give up."""
        error = dead.error
        if error is not None and error.is_refusal:
            first = len(self._links) == 1 and not dead.responded
            self._fail(f"Soniox refused the request: {error}", opened=not first)
            return None
        self._log.warning("Soniox request lost (%s); opening another", dead.dead_reason)
        now = time.monotonic()
        lived = now - dead.opened_at if dead.opened_at else 0.0
        if lived >= STABLE_S or self._trouble_since is None:
            self._trouble_since = now
            self._quick_losses = 0
        else:
            self._quick_losses += 1
        self._worked = self._worked or lived >= STABLE_S or dead.responded
        for delay in _RETRY_DELAYS_S[min(self._quick_losses, len(_RETRY_DELAYS_S) - 1) :]:
            with self._cond:
                if self._closing:
                    return None
                if delay:
                    self._cond.wait(delay)
            if time.monotonic() - self._trouble_since > RECOVERY_BUDGET_S:
                break
            try:
                link = self._open_link()
            except LinkRefused as exc:
                self._log.warning("reopening Soniox failed: %s", exc)
                continue
            self._count("replaced")
            return link
        self._fail("translation session lost and could not be reopened", opened=self._worked)
        return None

    def _open_link(self) -> SonioxLink:
        link = SonioxLink(
            url=self._config.ws_url,
            api_key=self._config.api_key,
            request=self._request,
            on_tokens=self._on_tokens,
            on_change=self._wake,
            log=self._log,
            name=f"{self._tag}#{len(self._links) + 1}-{uuid.uuid4().hex[:4]}",
        )
        self._links.append(link)
        try:
            link.open()
        except LinkRefused:
            self._count("failed")
            raise
        self._count("opened")
        return link

    # -- reader threads ---------------------------------------------------------------------

    def _on_tokens(self, tokens: Sequence[Token]) -> None:
        final_at = time.monotonic()
        with self._tokens_lock:
            source, translation, ready = self._assembler.feed(tokens, final_at)
        if source:
            self._listener.on_text("source", source)
        if translation:
            self._listener.on_text("translation", translation)
        for chunk in ready:
            self.speaker.speak(chunk, final_at)

    def _speak_due(self) -> None:
        now = time.monotonic()
        with self._tokens_lock:
            ready = self._assembler.due(now)
        for chunk in ready:
            self.speaker.speak(chunk, now)

    # -- shared -----------------------------------------------------------------------------

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _count(self, event: str) -> None:
        self._metrics.engine_sessions.labels(event).inc()

    def _shut_down(self) -> None:
        for link in self._links:
            link.close()
            link.join(1.0)
        with self._tokens_lock:
            rest = self._assembler.flush()
        for chunk in rest:
            self.speaker.speak(chunk, time.monotonic())
        self.speaker.finish()
        with self._cond:
            self._closing = True
            self._held.clear()

    def _fail(self, reason: str, *, opened: bool) -> None:
        with self._cond:
            if self._failed:
                return
            self._failed = True
            self._closing = True
            self._cond.notify()
        self.speaker.stop()
        self._listener.on_failed(reason, opened=opened)
