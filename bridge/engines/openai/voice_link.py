"""One connection to OpenAI's realtime voice endpoint, prompted as a strict interpreter.

The server's VAD cuts the speaker's audio into turns (``input_audio_buffer.committed``, one user
item each); it is told not to answer by itself (``create_response: false``). For every turn the
link asks for an *out-of-band* response (``conversation: "none"``): the model's translation is
never added to the conversation, and once the response is done the user items it translated are
deleted (``conversation.item.delete``). So each response sees only the speech it translates:
no conversation state is carried across turns, and the model cannot drift into answering
(OpenAI's guidance for interpreters on realtime voice models).

Turns are translated one at a time, in order: a turn committed while a response is under way
waits, and the next response covers every turn committed so far (the conversation then holds
exactly those items), so translations never overlap on the listener's line. Interruption is
off (``interrupt_response: false``): the speaker going on must not cut off the translation of
what they said before.

There is no ``session.close`` in this protocol: :meth:`finish` commits speech still under way,
lets the last response finish (bounded by the owner's join), then closes the socket (1000).
"""

from __future__ import annotations

import binascii
import time
from functools import partial
from typing import Any, Unpack

from openai import OpenAI
from openai.resources.realtime.realtime import RealtimeConnection
from openai.types.realtime.realtime_audio_config_input_param import (
    RealtimeAudioConfigInputParam,
)
from openai.types.realtime.realtime_response_create_params_param import (
    RealtimeResponseCreateParamsParam,
)
from openai.types.realtime.realtime_session_create_request_param import (
    RealtimeSessionCreateRequestParam,
)

from bridge.audio.pcm import Samples
from bridge.engines.link import LinkState
from bridge.engines.openai.config import AudioFormat
from bridge.engines.openai.connection import CONNECT_OPTIONS, LinkArgs, Manager, OpenAILink
from bridge.engines.openai.interpreter import decode_output, encode_input, format_param

# Server VAD: a 500 ms pause ends a turn (OpenAI's guide: works well for translation); 300 ms
# of audio before the detected start is kept so first syllables are not clipped.
VAD_SILENCE_MS = 500
VAD_PREFIX_MS = 300
VAD_THRESHOLD = 0.5


class RealtimeLink(OpenAILink[RealtimeConnection]):
    kind = "realtime"

    def __init__(
        self,
        client: OpenAI,
        *,
        model: str,
        voice: str,
        audio_format: AudioFormat,
        instructions: str,
        transcription_model: str | None,
        **link: Unpack[LinkArgs],
    ) -> None:
        super().__init__(**link)
        self._client = client
        self._model = model
        self._voice = voice
        self._format: AudioFormat = audio_format
        self.instructions = instructions
        self._transcription_model = transcription_model
        # Turn state, guarded by self._lock.
        self._speaking = False
        self._waiting: list[str] = []  # committed user items no response has covered yet
        self._responding: list[str] | None = None  # the items the response under way covers
        self._transcribed: set[str] = set()  # items whose transcript came as deltas
        self._handlers = {
            "session.created": self._on_session_created,
            "session.updated": self._on_session_updated,
            "input_audio_buffer.speech_started": self._on_speech_started,
            "input_audio_buffer.committed": self._on_committed,
            "response.output_audio.delta": self._on_output_audio_delta,
            "response.output_audio_transcript.delta": self._on_output_transcript_delta,
            "conversation.item.input_audio_transcription.delta": self._on_input_transcript_delta,
            "conversation.item.input_audio_transcription.completed": self._on_input_transcript,
            "response.done": self._on_response_done,
            "error": self._on_error,
        }

    def _connect(self) -> Manager:
        return self._client.realtime.connect(
            model=self._model, on_reconnecting=self._on_reconnecting, **CONNECT_OPTIONS
        )

    def _configure(self, conn: RealtimeConnection, event_id: str) -> None:
        audio_format = format_param(self._format)
        audio_input: RealtimeAudioConfigInputParam = {
            "format": audio_format,
            "turn_detection": {
                "type": "server_vad",
                "create_response": False,
                "interrupt_response": False,
                "silence_duration_ms": VAD_SILENCE_MS,
                "prefix_padding_ms": VAD_PREFIX_MS,
                "threshold": VAD_THRESHOLD,
            },
        }
        if self._transcription_model:
            audio_input["transcription"] = {"model": self._transcription_model}
        session: RealtimeSessionCreateRequestParam = {
            "type": "realtime",
            "instructions": self.instructions,
            "output_modalities": ["audio"],
            "audio": {
                "input": audio_input,
                "output": {"format": audio_format, "voice": self._voice},
            },
        }
        conn.session.update(session=session, event_id=event_id)

    def _on_fresh_session(self) -> None:
        with self._lock:
            self._speaking = False
            self._waiting.clear()
            self._responding = None

    # -- the owner's writer thread ----------------------------------------------------------

    def send(self, samples: Samples) -> bool:
        """Append audio at the format's input rate; False when the link is not up."""
        if self.state is not LinkState.UP:
            return False
        audio = encode_input(samples, self._format)
        return self._write(lambda conn: conn.input_audio_buffer.append(audio=audio))

    def finish(self) -> None:
        """Translate what is still owed, then close the socket (from the reader, once the last
        response is done; at once if nothing is owed)."""
        with self._lock:
            was = self.state
            if was in (LinkState.FINISHING, LinkState.CLOSED):
                return
            self.state = LinkState.FINISHING
            speaking = self._speaking
        if self._conn is None:
            self.state = LinkState.CLOSED
            return
        if was is LinkState.UP and speaking:
            # The speaker was mid-sentence: the server's VAD will not end that turn now.
            self._write(lambda conn: conn.input_audio_buffer.commit())
            return
        self._close_if_done()

    # -- reader thread ----------------------------------------------------------------------

    def _on_speech_started(self, event: Any) -> None:
        with self._lock:
            self._speaking = True

    def _on_committed(self, event: Any) -> None:
        # Speaking ends here, not at speech_stopped: the commit that follows it is still owed.
        with self._lock:
            self._speaking = False
            self._waiting.append(str(event.item_id))
        self._respond_if_idle()

    def _respond_if_idle(self) -> None:
        with self._lock:
            if self._responding is not None or not self._waiting:
                return
            self._responding, self._waiting = self._waiting, []
            turn = self._responding[-1]
        response: RealtimeResponseCreateParamsParam = {
            # Out of band: the translation is not added to the conversation.
            "conversation": "none",
            "output_modalities": ["audio"],
            "instructions": self.instructions,
            "metadata": {"turn": turn},
        }
        self._write(lambda conn: conn.response.create(response=response))

    def _on_output_audio_delta(self, event: Any) -> None:
        received_at = time.monotonic()
        try:
            audio = decode_output(event.delta, self._format)
        except (binascii.Error, ValueError):
            self._log.error("output audio delta is not base64; dropped")
            return
        self._listener.on_audio(audio, received_at)

    def _on_output_transcript_delta(self, event: Any) -> None:
        if isinstance(event.delta, str) and event.delta:
            self._listener.on_text("translation", event.delta)

    def _on_input_transcript_delta(self, event: Any) -> None:
        if isinstance(event.delta, str) and event.delta:
            with self._lock:
                self._transcribed.add(str(event.item_id))
            self._listener.on_text("source", event.delta)

    def _on_input_transcript(self, event: Any) -> None:
        # Models that stream (gpt-4o-transcribe) sent deltas; whisper-1 sends only this.
        with self._lock:
            streamed = str(event.item_id) in self._transcribed
            self._transcribed.discard(str(event.item_id))
        if not streamed and isinstance(event.transcript, str) and event.transcript:
            self._listener.on_text("source", event.transcript)

    def _on_response_done(self, event: Any) -> None:
        # Read leniently: whatever the event holds, the turn is over, and ignoring it would
        # leave every later turn waiting behind it.
        response = getattr(event, "response", None)
        status = getattr(response, "status", None)
        if status not in (None, "completed"):
            self._log.warning(
                "interpretation response %s: %s", status, getattr(response, "status_details", None)
            )
        with self._lock:
            covered, self._responding = self._responding or [], None
        for item_id in covered:
            # The turn is translated: forget it, so the next turn's response sees only itself.
            self._write(partial(_delete_item, item_id=item_id))
        self._respond_if_idle()
        self._close_if_done()

    def _on_error(self, event: Any) -> None:
        super()._on_error(event)
        if event.error.code == "input_audio_buffer_commit_empty":
            # Our closing commit found too little speech to translate: nothing more is owed.
            with self._lock:
                self._speaking = False
            self._close_if_done()

    def _close_if_done(self) -> None:
        with self._lock:
            done = (
                self.state is LinkState.FINISHING
                and self._responding is None
                and not self._waiting
                and not self._speaking
            )
        if done:
            self._close_socket()


def _delete_item(conn: RealtimeConnection, *, item_id: str) -> None:
    conn.conversation.item.delete(item_id=item_id)
