"""One connection to OpenAI's realtime translation endpoint (one server session).

The plumbing (reader thread, write lock, reconnects) is
:class:`~bridge.engines.openai.connection.OpenAILink`'s; this module knows the translation protocol:
``session.update`` with the output language, ``session.input_audio_buffer.append`` of 24 kHz PCM16,
``session.close`` (the server flushes, then sends ``session.closed``), and the ``session.output_*``
deltas.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any, Unpack

from openai import OpenAI
from openai.resources.realtime.translations.translations import TranslationsConnection
from openai.types.realtime.realtime_translation_session_update_request_param import (
    AudioInput,
    RealtimeTranslationSessionUpdateRequestParam,
)

from bridge.audio.pcm import ENGINE_RATE_HZ, Pcm16, Samples
from bridge.engines.link import LinkState
from bridge.engines.openai.connection import (
    CONNECT_OPTIONS,
    LinkArgs,
    Manager,
    OpenAILink,
    describe,
)

__all__ = ["LinkState", "TranslationLink", "describe"]


class TranslationLink(OpenAILink[TranslationsConnection]):
    kind = "translation"

    def __init__(
        self,
        client: OpenAI,
        *,
        model: str,
        transcription_model: str | None,
        **link: Unpack[LinkArgs],
    ) -> None:
        super().__init__(**link)
        self._client = client
        self._model = model
        self._transcription_model = transcription_model
        self._handlers = {
            "session.created": self._on_session_created,
            "session.updated": self._on_session_updated,
            "session.output_audio.delta": self._on_output_audio_delta,
            "session.output_transcript.delta": self._on_output_transcript_delta,
            "session.input_transcript.delta": self._on_input_transcript_delta,
            "error": self._on_error,
        }

    def _connect(self) -> Manager:
        return self._client.realtime.translations.connect(
            model=self._model, on_reconnecting=self._on_reconnecting, **CONNECT_OPTIONS
        )

    def _configure(self, conn: TranslationsConnection, event_id: str) -> None:
        audio_input: AudioInput = {
            "transcription": (
                {"model": self._transcription_model} if self._transcription_model else None
            )
        }
        session: RealtimeTranslationSessionUpdateRequestParam = {
            "audio": {"input": audio_input, "output": {"language": self._spec.output_language}}
        }
        conn.session.update(session=session, event_id=event_id)

    # -- the owner's writer thread ----------------------------------------------------------

    def send(self, samples: Samples) -> bool:
        """Append 24 kHz audio; False (nothing sent) when the link is not up or the write
        failed."""
        if self.state is not LinkState.UP:
            return False
        audio = base64.b64encode(samples.astype("<i2", copy=False).tobytes()).decode("ascii")
        return self._write(lambda conn: conn.session.input_audio_buffer.append(audio=audio))

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
                with self._write_lock:
                    conn.session.close()
                return
            except Exception as exc:  # noqa: BLE001 - ending anyway: just close the socket
                self._log.debug("session.close failed: %s", describe(exc))
        self._close_socket()

    # -- reader thread ----------------------------------------------------------------------

    def _ended(self, event: Any) -> bool:
        return getattr(event, "type", None) == "session.closed"

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
        if isinstance(event.delta, str) and event.delta:
            self._listener.on_text("translation", event.delta)

    def _on_input_transcript_delta(self, event: Any) -> None:
        if isinstance(event.delta, str) and event.delta:
            self._listener.on_text("source", event.delta)
