"""One connection to OpenAI's realtime translation endpoint (one server session) and its reader.

A :class:`TranslationLink` is owned by one :class:`~bridge.openai_engine.OpenAITranslationSession`,
whose writer thread is the only caller of :meth:`open`, :meth:`send` and :meth:`finish`, so the
socket has exactly one writer of ours. The link's reader thread iterates the SDK's typed server
events and hands audio and text to the listener.

Transient drops (close 1001/1006/1011/…) are retried by the SDK (``on_reconnecting``, backoff).
A reconnect opens a *fresh* server session with default settings, so when its ``session.created``
arrives the link asks to be configured again before any more audio is sent; while the SDK is
reconnecting the link reports itself down, so the owner holds the speaker's audio instead of
letting it reach the new session unconfigured.
"""

from __future__ import annotations

import base64
import binascii
import enum
import threading
import time
from collections.abc import Callable
from typing import Any

from openai import OpenAI
from openai.resources.realtime.translations.translations import TranslationsConnection
from openai.types.realtime import RealtimeTranslationServerEvent
from openai.types.realtime.realtime_translation_session_update_request_param import (
    AudioInput,
    RealtimeTranslationSessionUpdateRequestParam,
)
from openai.types.websocket_reconnection import ReconnectingEvent, ReconnectingOverrides

from bridge.audio import ENGINE_RATE_HZ, Pcm16
from bridge.engine import EngineUnavailable, SessionListener, SessionSpec
from bridge.logs import CallLogger

# Bound on one server message: a delta of a few seconds of 24 kHz PCM16 in base64 is < 1 MiB.
MAX_SERVER_MESSAGE_BYTES = 4 * 1024 * 1024
# The SDK queues what is sent while it reconnects; we hold audio ourselves, so keep it small.
SDK_QUEUE_BYTES = 256 * 1024
OPEN_TIMEOUT_S = 10.0
# The SDK's own retries for a dropped socket: ~0.25, 0.5, 1, 2, 2 s apart (with jitter), so the
# first attempt comes within a quarter second of the drop.
RECONNECT_ATTEMPTS = 5
RECONNECT_FIRST_DELAY_S = 0.25
RECONNECT_MAX_DELAY_S = 2.0
# After session.close the server flushes pending output, then sends session.closed.
FINISH_WAIT_S = 3.0


class LinkState(enum.Enum):
    OPENING = "opening"
    UP = "up"
    RECONNECTING = "reconnecting"
    FINISHING = "finishing"
    DEAD = "dead"  # lost for good: the owner must open a replacement
    CLOSED = "closed"


class TranslationLink:
    def __init__(
        self,
        client: OpenAI,
        *,
        model: str,
        transcription_model: str | None,
        spec: SessionSpec,
        listener: SessionListener,
        on_change: Callable[[], None],
        log: CallLogger,
        name: str,
        count: Callable[[str], None] | None = None,
    ) -> None:
        self._count = count or (lambda event: None)
        self._client = client
        self._model = model
        self._transcription_model = transcription_model
        self._spec = spec
        self._listener = listener
        self._on_change = on_change
        self._log = log
        self.name = name
        self.state = LinkState.OPENING
        self.dead_reason = ""
        self.opened_at = 0.0
        self.expires_at: float | None = None  # monotonic time the server will end the session
        self._lock = threading.Lock()
        self._conn: TranslationsConnection | None = None
        self._reader: threading.Thread | None = None
        self._created = 0
        self._needs_config = False
        self._handlers: dict[str, Callable[[Any], None]] = {
            "session.created": self._on_session_created,
            "session.output_audio.delta": self._on_output_audio_delta,
            "session.output_transcript.delta": self._on_output_transcript_delta,
            "session.input_transcript.delta": self._on_input_transcript_delta,
            "error": self._on_error,
        }

    # -- the owner's writer thread ----------------------------------------------------------

    def open(self) -> None:
        """Connect and configure; raises :class:`EngineUnavailable` if that is impossible."""
        manager = self._client.realtime.translations.connect(
            model=self._model,
            on_reconnecting=self._on_reconnecting,
            max_retries=RECONNECT_ATTEMPTS,
            initial_delay=RECONNECT_FIRST_DELAY_S,
            max_delay=RECONNECT_MAX_DELAY_S,
            max_queue_size=SDK_QUEUE_BYTES,
            websocket_connection_options={
                "max_size": MAX_SERVER_MESSAGE_BYTES,
                "compression": None,
            },
        )
        started = time.monotonic()
        try:
            conn = manager.enter()
        except Exception as exc:  # any failure to open means "unavailable"
            self.state = LinkState.DEAD
            raise EngineUnavailable(f"translation session could not open: {describe(exc)}") from exc
        self._conn = conn
        self.opened_at = time.monotonic()
        self._configure(conn)
        self.state = LinkState.UP
        self._log.info(
            "translation session %s open in %.0f ms (output %s)",
            self.name,
            1000 * (self.opened_at - started),
            self._spec.output_language,
        )
        self._reader = threading.Thread(
            target=self._run_reader, args=(conn,), name=f"engine-reader:{self.name}", daemon=True
        )
        self._reader.start()

    def send(self, pcm24: bytes) -> bool:
        """Append audio; False (nothing sent) when the link is not up or the write failed."""
        conn = self._conn
        if conn is None or self.state is not LinkState.UP:
            return False
        try:
            with self._lock:
                needs_config, self._needs_config = self._needs_config, False
            if needs_config:
                self._configure(conn)
            conn.session.input_audio_buffer.append(audio=base64.b64encode(pcm24).decode("ascii"))
        except Exception as exc:  # noqa: BLE001 - the socket dropped; the reader tells how
            self._log.info("translation append failed (%s); holding audio", describe(exc))
            with self._lock:
                if self.state is LinkState.UP:
                    self.state = LinkState.RECONNECTING
            return False
        return True

    def finish(self) -> None:
        """Flush and end the server session (``session.close``); the reader closes the socket."""
        conn = self._conn
        with self._lock:
            was = self.state
            if was in (LinkState.FINISHING, LinkState.CLOSED):
                return
            self.state = LinkState.FINISHING
        if conn is None:
            self.state = LinkState.CLOSED
            return
        if was is LinkState.UP:
            try:
                conn.session.close()
                return
            except Exception as exc:  # noqa: BLE001 - ending anyway: just close the socket
                self._log.debug("session.close failed: %s", describe(exc))
        self._close_socket()

    def join(self, timeout: float) -> None:
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout)
        if reader is not None and reader.is_alive():
            self._close_socket()  # no session.closed in time: stop waiting for it
            reader.join(1.0)

    @property
    def alive(self) -> bool:
        reader = self._reader
        return reader is not None and reader.is_alive()

    # -- reader thread ----------------------------------------------------------------------

    def _run_reader(self, conn: TranslationsConnection) -> None:
        reason = "the translation server ended the session"
        try:
            for event in conn:
                self._dispatch(event)
                if event.type == "session.closed":
                    break
        except Exception as exc:  # noqa: BLE001 - thread boundary: the SDK gave up
            reason = f"translation socket lost: {describe(exc)}"
        finally:
            self._close_socket()
            with self._lock:
                finishing = self.state is LinkState.FINISHING
                self.state = LinkState.CLOSED if finishing else LinkState.DEAD
                self.dead_reason = "" if finishing else reason
            if not finishing:
                self._log.warning("translation session %s lost: %s", self.name, reason)
            self._on_change()

    def _dispatch(self, event: RealtimeTranslationServerEvent) -> None:
        handler = self._handlers.get(event.type)
        if handler is None:
            self._log.debug("ignoring server event %s", event.type)
            return
        handler(event)

    def _on_session_created(self, event: Any) -> None:
        self._created += 1
        expires = getattr(event.session, "expires_at", None)
        if isinstance(expires, int | float) and expires > 0:
            self.expires_at = time.monotonic() + max(0.0, float(expires) - time.time())
        if self._created > 1:
            self._count("reconnected")
            # The SDK reconnected into a fresh server session with default settings.
            self._log.info("translation session %s back after reconnect; re-configuring", self.name)
            with self._lock:
                self._needs_config = True
                if self.state is LinkState.RECONNECTING:
                    self.state = LinkState.UP
            self._on_change()

    def _on_output_audio_delta(self, event: Any) -> None:
        received_at = time.monotonic()
        rate = event.sample_rate or ENGINE_RATE_HZ
        if rate != ENGINE_RATE_HZ or (event.channels or 1) != 1:
            self._log.error("unexpected output audio %s Hz x%s; dropped", rate, event.channels)
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
        # Most errors leave the session open (OpenAI's docs): log them and carry on.
        self._log.warning(
            "translation server error type=%s code=%s: %s", err.type, err.code, err.message
        )

    def _on_reconnecting(self, event: ReconnectingEvent) -> ReconnectingOverrides | None:
        with self._lock:
            if self.state in (LinkState.FINISHING, LinkState.CLOSED):
                return {"abort": True}
            self.state = LinkState.RECONNECTING
        self._log.warning(
            "translation socket dropped (close %s); reconnect %d/%d in %.2fs",
            event.close_code,
            event.attempt,
            event.max_attempts,
            event.delay,
        )
        self._on_change()
        return None

    # -- shared -----------------------------------------------------------------------------

    def _configure(self, conn: TranslationsConnection) -> None:
        audio_input: AudioInput = {
            "transcription": (
                {"model": self._transcription_model} if self._transcription_model else None
            )
        }
        session: RealtimeTranslationSessionUpdateRequestParam = {
            "audio": {"input": audio_input, "output": {"language": self._spec.output_language}}
        }
        conn.session.update(session=session)

    def _close_socket(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - closing a broken socket may raise; nothing to do
            self._log.debug("closing translation socket raised", exc_info=True)


def describe(exc: BaseException) -> str:
    """A one-line cause without secrets (no headers, no URLs with keys)."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:
        return f"HTTP {status} from the translation endpoint"
    return f"{type(exc).__name__}: {exc}"
