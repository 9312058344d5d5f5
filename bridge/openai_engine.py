"""``ENGINE=openai``: OpenAI realtime translation (``gpt-realtime-translate``) via the official SDK.

Concurrency, per session (one direction of one call): a *writer* thread owns everything sent on
the socket (connect, ``session.update``, audio appends, ``session.close``), so the socket has
exactly one writer of ours; a *reader* thread iterates the SDK's typed server events and hands
audio and text to the listener. ``send_audio`` is called from the speaker's Media Stream thread:
it resamples 8 → 24 kHz with the session's own stateful resampler and only queues.

Why the SDK's sync client: it gives typed events and reconnection with backoff that re-sends
what was queued during the gap; the protocol reference (Twilio Media Streams + this endpoint)
needs nothing it lacks.
"""

from __future__ import annotations

import base64
import binascii
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from openai import OpenAI
from openai.resources.realtime.translations.translations import TranslationsConnection
from openai.types.realtime import RealtimeTranslationServerEvent
from openai.types.realtime.realtime_translation_session_update_request_param import (
    AudioInput,
    RealtimeTranslationSessionUpdateRequestParam,
)
from openai.types.websocket_reconnection import ReconnectingEvent, ReconnectingOverrides

from bridge.audio import ENGINE_RATE_HZ, Pcm16, Samples
from bridge.engine import EngineUnavailable, SessionListener, SessionSpec, TranslationSession
from bridge.logs import call_logger
from bridge.resample import Upsampler8kTo24k
from bridge.settings import Settings

# The model consumes 200 ms frames; appends of ~100 ms keep its buffer fed without adding more
# than 100 ms of batching delay on our side (the issue asks for 100–200 ms).
APPEND_MS = 100
APPEND_SAMPLES = ENGINE_RATE_HZ * APPEND_MS // 1000
# Audio waiting to be sent while the socket connects or reconnects: at most this much is kept,
# the oldest dropped first (counted and logged), so a stalled engine cannot grow memory.
MAX_QUEUED_MS = 5000
_ITEM_MS = 20
# Bound on one server message: a delta of a few seconds of 24 kHz PCM16 in base64 is < 1 MiB.
MAX_SERVER_MESSAGE_BYTES = 4 * 1024 * 1024
CONNECT_TIMEOUT_S = 10.0
# After session.close the server flushes pending output then sends session.closed.
CLOSE_WAIT_S = 3.0
RECONNECT_ATTEMPTS = 5


class OpenAIEngine:
    name = "openai"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = OpenAI(api_key=settings.openai_api_key, base_url=settings.openai_base_url)

    def session(self, spec: SessionSpec, listener: SessionListener) -> TranslationSession:
        return OpenAITranslationSession(
            self._client,
            model=self._settings.translation_model,
            transcription_model=self._settings.transcription_model,
            spec=spec,
            listener=listener,
        )


class OpenAITranslationSession:
    """One realtime translation socket for one direction of one call."""

    def __init__(
        self,
        client: OpenAI,
        *,
        model: str,
        transcription_model: str | None,
        spec: SessionSpec,
        listener: SessionListener,
    ) -> None:
        self._client = client
        self._model = model
        self._transcription_model = transcription_model
        self._spec = spec
        self._listener = listener
        self._log = call_logger(__name__, spec.call_sid, spec.direction)
        self._upsampler = Upsampler8kTo24k()
        self._queue: queue.Queue[Samples | None] = queue.Queue(maxsize=MAX_QUEUED_MS // _ITEM_MS)
        self._closing = threading.Event()
        self._config_needed = threading.Event()
        self._failed = False
        self._stop_queued = False
        self._fail_lock = threading.Lock()
        self._dropped_ms = 0
        self._sessions_created = 0
        tag = f"{spec.call_sid[-6:]}-{'c2a' if spec.direction == 'caller_to_agent' else 'a2c'}"
        self._writer = threading.Thread(
            target=self._run_writer, name=f"engine-writer:{tag}", daemon=True
        )
        self._reader: threading.Thread | None = None
        self._tag = tag
        self._handlers: dict[str, Callable[[Any], None]] = {
            "session.created": self._on_session_created,
            "session.updated": self._on_session_updated,
            "session.output_audio.delta": self._on_output_audio_delta,
            "session.output_transcript.delta": self._on_output_transcript_delta,
            "session.input_transcript.delta": self._on_input_transcript_delta,
            "error": self._on_error,
        }

    # -- called by the call ---------------------------------------------------------------

    def start(self) -> None:
        self._writer.start()

    def send_audio(self, audio: Pcm16) -> None:
        if self._closing.is_set():
            return
        upsampled = self._upsampler.process(audio.samples)
        try:
            self._queue.put_nowait(upsampled)
        except queue.Full:
            self._drop_oldest_and_put(upsampled)

    def close(self) -> None:
        self._closing.set()
        with self._fail_lock:
            if self._stop_queued:
                return
            self._stop_queued = True
        while True:
            try:
                self._queue.put_nowait(None)
                return
            except queue.Full:
                self._drop_oldest()

    def join(self, timeout: float) -> None:
        """Wait for this session's threads to end (tests and shutdown)."""
        deadline = time.monotonic() + timeout
        for thread in (self._writer, self._reader):
            if (
                thread is not None
                and thread.is_alive()
                and thread is not threading.current_thread()
            ):
                thread.join(max(0.0, deadline - time.monotonic()))

    # -- writer thread ----------------------------------------------------------------------

    def _run_writer(self) -> None:
        try:
            conn = self._connect()
        except EngineUnavailable as exc:
            self._fail(str(exc))
            return
        try:
            self._send_config(conn)
            self._reader = threading.Thread(
                target=self._run_reader,
                args=(conn,),
                name=f"engine-reader:{self._tag}",
                daemon=True,
            )
            self._reader.start()
            self._pump(conn)
            conn.session.close()
        except Exception as exc:  # noqa: BLE001 - thread boundary: report, never crash the call
            if not self._closing.is_set():
                self._log.exception("translation socket write failed")
            self._fail(f"translation socket write failed: {type(exc).__name__}")
            self._close_socket(conn)
            return
        reader = self._reader
        if reader is not None:
            reader.join(CLOSE_WAIT_S)
        self._close_socket(conn)

    def _connect(self) -> TranslationsConnection:
        manager = self._client.realtime.translations.connect(
            model=self._model,
            on_reconnecting=self._on_reconnecting,
            max_retries=RECONNECT_ATTEMPTS,
            initial_delay=0.25,
            max_delay=2.0,
            websocket_connection_options={
                "max_size": MAX_SERVER_MESSAGE_BYTES,
                "compression": None,
            },
        )
        started = time.monotonic()
        try:
            conn = manager.enter()
        except Exception as exc:  # any failure to open means unavailable
            raise EngineUnavailable(
                f"translation session could not open: {_describe(exc)}"
            ) from exc
        self._log.info(
            "translation session open in %.0f ms (output %s)",
            1000 * (time.monotonic() - started),
            self._spec.output_language,
        )
        return conn

    def _send_config(self, conn: TranslationsConnection) -> None:
        audio_input: AudioInput = {
            "transcription": (
                {"model": self._transcription_model} if self._transcription_model else None
            )
        }
        session: RealtimeTranslationSessionUpdateRequestParam = {
            "audio": {"input": audio_input, "output": {"language": self._spec.output_language}}
        }
        conn.session.update(session=session)

    def _pump(self, conn: TranslationsConnection) -> None:
        pending: list[Samples] = []
        pending_samples = 0
        while True:
            item = self._queue.get()
            if self._config_needed.is_set():
                # A reconnect opened a fresh server session: configure it before more audio.
                self._config_needed.clear()
                self._send_config(conn)
            if item is None:
                break
            pending.append(item)
            pending_samples += len(item)
            if pending_samples >= APPEND_SAMPLES:
                self._append(conn, pending)
                pending, pending_samples = [], 0
        if pending:
            self._append(conn, pending)

    @staticmethod
    def _append(conn: TranslationsConnection, chunks: list[Samples]) -> None:
        pcm = np.concatenate(chunks).astype("<i2", copy=False).tobytes()
        conn.session.input_audio_buffer.append(audio=base64.b64encode(pcm).decode("ascii"))

    def _drop_oldest(self) -> None:
        try:
            dropped = self._queue.get_nowait()
        except queue.Empty:
            return
        if dropped is not None:
            if self._dropped_ms == 0:
                self._log.warning("translation input backlog full: dropping oldest audio")
            self._dropped_ms += _ITEM_MS

    def _drop_oldest_and_put(self, item: Samples) -> None:
        self._drop_oldest()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._dropped_ms += _ITEM_MS

    # -- reader thread ----------------------------------------------------------------------

    def _run_reader(self, conn: TranslationsConnection) -> None:
        try:
            for event in conn:
                self._dispatch(event)
                if event.type == "session.closed":
                    self._log.info("translation session closed by server after session.close")
                    return
        except Exception as exc:  # noqa: BLE001 - thread boundary
            if not self._closing.is_set():
                self._log.warning("translation socket lost: %s", _describe(exc))
                self._fail(f"translation socket lost: {_describe(exc)}")
            return
        if not self._closing.is_set():
            self._fail("translation server ended the session")

    def _dispatch(self, event: RealtimeTranslationServerEvent) -> None:
        handler = self._handlers.get(event.type)
        if handler is None:
            self._log.debug("ignoring server event %s", event.type)
            return
        handler(event)

    def _on_session_created(self, event: Any) -> None:
        self._sessions_created += 1
        if self._sessions_created > 1:
            self._log.info("translation session re-created after reconnect; re-configuring")
            self._config_needed.set()

    def _on_session_updated(self, event: Any) -> None:
        self._log.debug("translation session configured")

    def _on_output_audio_delta(self, event: Any) -> None:
        received_at = time.monotonic()
        rate = event.sample_rate or ENGINE_RATE_HZ
        if rate != ENGINE_RATE_HZ or (event.channels or 1) != 1:
            self._log.error(
                "unexpected output audio format %s Hz x%s; dropped", rate, event.channels
            )
            return
        try:
            pcm = base64.b64decode(event.delta, validate=True)
        except (binascii.Error, ValueError):
            self._log.error("output audio delta is not base64; dropped")
            return
        self._listener.on_audio(Pcm16.from_bytes(pcm, ENGINE_RATE_HZ), received_at)

    def _on_output_transcript_delta(self, event: Any) -> None:
        if event.delta:
            self._listener.on_text("translation", str(event.delta))

    def _on_input_transcript_delta(self, event: Any) -> None:
        if event.delta:
            self._listener.on_text("source", str(event.delta))

    def _on_error(self, event: Any) -> None:
        err = event.error
        # Most errors leave the session open (OpenAI's docs): log and carry on.
        self._log.warning(
            "translation server error type=%s code=%s: %s", err.type, err.code, err.message
        )

    def _on_reconnecting(self, event: ReconnectingEvent) -> ReconnectingOverrides | None:
        if self._closing.is_set():
            return {"abort": True}
        self._log.warning(
            "translation socket dropped (close %s); reconnect %d/%d in %.2fs",
            event.close_code,
            event.attempt,
            event.max_attempts,
            event.delay,
        )
        return None

    # -- shared -----------------------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        with self._fail_lock:
            if self._failed:
                return
            self._failed = True
        self.close()  # wakes the writer so both threads end
        self._listener.on_failed(reason)

    def _close_socket(self, conn: TranslationsConnection) -> None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - closing a broken socket may raise; nothing to do
            self._log.debug("closing translation socket raised", exc_info=True)


def _describe(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:
        return f"HTTP {status} from the translation endpoint"
    return f"{type(exc).__name__}: {exc}"
