"""Speaking translated text with Soniox's own real-time TTS (``SONIOX_TTS=soniox``).

One WebSocket per translation session, opened at the first chunk and reopened after a drop;
each chunk is one stream on it (config, the text with ``text_end``, audio until
``terminated``), spoken at 8 kHz so the leg plays it without resampling. The speaker's thread
is the socket's only writer and reader: chunks are spoken one at a time anyway.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from bridge.engines.contract import SessionListener
from bridge.engines.speech.base import ChunkSpeaker, SpeechFailed, SpeechTiming
from bridge.engines.speech.soniox_tts_wire import (
    KEEPALIVE,
    SAMPLE_RATE_HZ,
    TtsWireError,
    parse_event,
    stream_config,
    stream_text,
)
from bridge.ops.logs import CallLogger

OPEN_TIMEOUT_S = 10.0
# A chunk is a sentence or less: far under the 2-minute stream limit, and audio starts at once.
STREAM_TIMEOUT_S = 30.0
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class SonioxSpeaker(ChunkSpeaker):
    def __init__(
        self,
        *,
        url: str,
        api_key: str,
        model: str,
        voice: str,
        language: str,
        listener: SessionListener,
        log: CallLogger,
        name: str,
        on_failure: Callable[[str], None],
        on_fatal: Callable[[str], None],
    ) -> None:
        self._url = url
        self._api_key = api_key
        self._model = model
        self._voice = voice
        self._language = language
        self._conn: ClientConnection | None = None
        super().__init__(
            listener=listener, log=log, name=name, on_failure=on_failure, on_fatal=on_fatal
        )

    def _speak_one(self, text: str, final_at: float) -> None:
        requested_at = time.monotonic()
        stream_id = uuid.uuid4().hex[:12]
        conn = self._connection()
        try:
            conn.send(
                stream_config(
                    model=self._model,
                    language=self._language,
                    voice=self._voice,
                    stream_id=stream_id,
                )
            )
            conn.send(stream_text(text, stream_id, end=True))
            first_audio_at = self._receive(conn, stream_id)
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            self._drop_connection()
            raise SpeechFailed(f"Soniox TTS connection lost: {type(exc).__name__}") from exc
        if first_audio_at is not None:
            self.timings.append(SpeechTiming(final_at, requested_at, first_audio_at))

    def _receive(self, conn: ClientConnection, stream_id: str) -> float | None:
        first_audio_at: float | None = None
        deadline = time.monotonic() + STREAM_TIMEOUT_S
        while True:
            message = conn.recv(timeout=max(0.0, deadline - time.monotonic()))
            try:
                event = parse_event(message)
            except TtsWireError as exc:
                self._log.warning("ignoring a malformed Soniox TTS message: %s", exc)
                continue
            if event.stream_id not in (stream_id, None):
                continue  # the end of a stream given up on earlier
            if event.error_code is not None:  # this stream's, or the connection's
                raise SpeechFailed(f"Soniox TTS error {event.error_code}: {event.error_message}")
            if event.audio and not self.stopped:
                first_audio_at = self._deliver(event.audio, SAMPLE_RATE_HZ, first_audio_at)
            if event.terminated or self.stopped:
                return first_audio_at

    def _connection(self) -> ClientConnection:
        if self._conn is not None:
            return self._conn
        try:
            self._conn = connect(
                self._url,
                additional_headers={"Authorization": f"Bearer {self._api_key}"},
                open_timeout=OPEN_TIMEOUT_S,
                max_size=MAX_MESSAGE_BYTES,
                compression=None,
            )
        except InvalidStatus as exc:
            raise SpeechFailed(f"HTTP {exc.response.status_code} from Soniox TTS") from exc
        except (OSError, TimeoutError) as exc:
            raise SpeechFailed(f"Soniox TTS unreachable: {type(exc).__name__}") from exc
        return self._conn

    def _idle(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.send(KEEPALIVE)
        except (ConnectionClosed, OSError):
            self._drop_connection()

    def _close(self) -> None:
        self._drop_connection()

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken socket may raise; nothing to do
                self._log.debug("closing Soniox TTS socket raised", exc_info=True)
