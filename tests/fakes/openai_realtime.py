"""A local stand-in for OpenAI's realtime voice WebSocket (``gpt-realtime``, GA protocol).

:class:`FakeRealtimeServer` serves ``GET /v1/realtime?model=…`` *and* the translation endpoint
(it is a :class:`FakeTranslationServer`), so one ``OPENAI_BASE_URL`` serves ``ENGINE=auto``,
which uses both. Point the SDK at ``server.base_url``.

What it plays, per session: ``session.update`` (GA shape: ``session.type`` required, the beta
shape refused), ``input_audio_buffer.append`` in the configured format (``audio/pcm`` 24 kHz or
``audio/pcmu``), server VAD over 20 ms frames (``speech_started`` / ``speech_stopped``, then
``input_audio_buffer.committed`` and the user item added to the conversation, with input
transcription if configured), ``response.create`` (in-band or out-of-band with
``conversation: "none"``), ``conversation.item.delete`` → ``conversation.item.deleted``, and
``error`` for anything invalid. Every client event is validated against the SDK's types.

The model: each 200 ms of speech in the items a response sees becomes 200 ms of the tone of the
language the instructions interpret into (``tone_for``), with one transcript word each. Each
response records which conversation items it saw, so tests can check no state accumulates.

Concurrency as in ``openai_translate``: one reader thread per connection, one writer per
session (the :class:`FakeSession` outbox).
"""

from __future__ import annotations

import base64
import re
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from openai.types.realtime import (
    ConversationItemDeleteEvent,
    InputAudioBufferAppendEvent,
    InputAudioBufferCommitEvent,
    ResponseCreateEvent,
    SessionUpdateEvent,
)
from websockets.sync.server import ServerConnection

from bridge.engines.openai.interpreter import ENGLISH_NAMES
from tests.fakes import openai_realtime_events as wire
from tests.fakes.audio import (
    ENGINE_RATE_HZ,
    TWILIO_RATE_HZ,
    pcm16_from_bytes,
    pcm16_to_bytes,
    pcm16_to_ulaw,
    rms,
    sine,
    ulaw_to_pcm16,
)
from tests.fakes.openai_events import ClientEventError, error_event, new_id
from tests.fakes.openai_session import AppendRecord, FakeSession
from tests.fakes.openai_translate import TRANSLATION_PATH, FakeTranslationServer, tone_for

REALTIME_PATH = "/v1/realtime"
VAD_FRAME_MS = 20
SPEECH_RMS = 300.0
OUTPUT_CHUNK_MS = 200
MIN_COMMIT_MS = 100  # the API refuses to commit less
OUTPUT_WORDS = {"en": "hello ", "es": "hola "}
_CODE_BY_NAME = {name.split(" ")[0].lower(): code for code, name in ENGLISH_NAMES.items()}
_INTO = re.compile(r"\binto ([A-Z][a-z]+)")


def language_of(instructions: str) -> str | None:
    """The code of the language instructions interpret into ("… into Spanish."), if named."""
    found = _INTO.search(instructions)
    return _CODE_BY_NAME.get(found.group(1).lower()) if found else None


@dataclass
class Item:
    id: str
    role: str
    audio: bytes = b""  # PCM16 LE at the input rate (user items)
    speech_ms: int = 0


@dataclass
class ResponseRecord:
    id: str
    conversation: str
    instructions: str
    context: tuple[str, ...]  # ids of the conversation items the response saw
    metadata: dict[str, Any] | None


class RealtimeSession(FakeSession):
    """One realtime voice session: its configuration, conversation and recordings."""

    def __init__(self, connection: ServerConnection, model: str, headers: dict[str, str]) -> None:
        super().__init__(connection, model, headers)
        self.config: dict[str, Any] = {}  # the session as the client last set it
        self.instructions = ""
        self.input_format = "audio/pcm"
        self.output_format = "audio/pcm"
        self.transcription: dict[str, Any] | None = None
        self.turn_detection: dict[str, Any] | None = {"type": "server_vad"}
        self.conversation: list[Item] = []
        self.responses: list[ResponseRecord] = []
        self.deleted: list[str] = []
        self.closed_by_server = False
        self._buffer = bytearray()  # uncommitted input (PCM16 at the input rate)
        self._speaking_item: str | None = None
        self._silence_ms = 0
        self._speech_ms = 0
        self._audio_ms = 0
        self._frame = bytearray()
        self._responding = False

    @property
    def input_rate_hz(self) -> int:
        return TWILIO_RATE_HZ if self.input_format == "audio/pcmu" else ENGINE_RATE_HZ

    @property
    def interpreting_into(self) -> str | None:
        """The language the instructions interpret into ("… into Spanish."), as a code."""
        return language_of(self.instructions)

    @property
    def ended_cleanly(self) -> bool:
        return self.close_code == 1000 and not self.closed_by_server

    def session_json(self) -> dict[str, Any]:
        return wire.session_object(self.id, self.model, self.expires_at, self.config)


class FakeRealtimeServer(FakeTranslationServer):
    """The translation stand-in plus the realtime voice endpoint, on one port."""

    paths = (TRANSLATION_PATH, REALTIME_PATH)

    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__(api_key=api_key)
        self._realtime: list[RealtimeSession] = []
        self._realtime_lock = threading.Lock()
        self.min_commit_ms = MIN_COMMIT_MS  # a test may raise it to make commits fail

    @property
    def realtime_sessions(self) -> list[RealtimeSession]:
        with self._realtime_lock:
            return list(self._realtime)

    def drop_all(self, code: int | None = 1011) -> None:
        super().drop_all(code)
        for session in self.realtime_sessions:
            if not session.ended.is_set():
                session.closed_by_server = True
                session.drop(code)

    def stop(self) -> None:
        for session in self.realtime_sessions:
            if not session.ended.is_set():
                session.closed_by_server = True
                session.drop(1001)
        super().stop()

    # -- connection -----------------------------------------------------------------------

    def _handle(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        url = urlsplit(request.path)
        if url.path != REALTIME_PATH:
            super()._handle(connection)
            return
        model = parse_qs(url.query)["model"][0]
        session = RealtimeSession(connection, model, dict(request.headers.raw_items()))
        with self._realtime_lock:
            self._realtime.append(session)
        self._serve(
            connection,
            session,
            wire.event("session.created", session=session.session_json()),
            lambda message: self._on_realtime_message(session, message),
        )

    def _on_realtime_message(self, session: RealtimeSession, message: str | bytes) -> None:
        now = time.monotonic()
        try:
            event = wire.parse_client_event(message)
        except ClientEventError as err:
            raw = message if isinstance(message, str) else repr(message[:64])
            session.invalid_events.append((raw, err.code, err.message))
            session.send(
                error_event("invalid_request_error", err.code, err.message, err.param, err.event_id)
            )
            return
        session.received_events.append((now, event.model_dump(exclude_unset=True)))
        if isinstance(event, SessionUpdateEvent):
            self._realtime_update(session, event)
        elif isinstance(event, InputAudioBufferAppendEvent):
            self._realtime_append(session, event)
        elif isinstance(event, InputAudioBufferCommitEvent):
            self._commit(session, event.event_id)
        elif isinstance(event, ResponseCreateEvent):
            self._on_response_create(session, event)
        elif isinstance(event, ConversationItemDeleteEvent):
            self._on_delete(session, event)

    def _refuse(self, session: RealtimeSession, code: str, message: str, event_id: Any) -> None:
        session.invalid_events.append(("", code, message))
        session.send(error_event("invalid_request_error", code, message, None, event_id))

    def _realtime_update(self, session: RealtimeSession, event: SessionUpdateEvent) -> None:
        if self.config_faulted(session, event.event_id):
            return
        update = event.model_dump(exclude_unset=True)["session"]
        session.updates.append(update)
        session.config.update({k: v for k, v in update.items() if k != "type"})
        session.instructions = update.get("instructions", session.instructions)
        audio = update.get("audio") or {}
        audio_in, audio_out = audio.get("input") or {}, audio.get("output") or {}
        if "format" in audio_in:
            session.input_format = audio_in["format"]["type"]
        if "format" in audio_out:
            session.output_format = audio_out["format"]["type"]
        if "transcription" in audio_in:
            session.transcription = audio_in["transcription"]
        if "turn_detection" in audio_in:
            session.turn_detection = audio_in["turn_detection"]
        self.updated(session, wire.event("session.updated", session=session.session_json()))

    # -- input audio and server VAD -------------------------------------------------------

    def _realtime_append(
        self, session: RealtimeSession, event: InputAudioBufferAppendEvent
    ) -> None:
        try:
            raw = base64.b64decode(event.audio, validate=True)
        except ValueError:
            self._refuse(session, "invalid_value", "Invalid 'audio': not base64.", event.event_id)
            return
        if session.input_format == "audio/pcmu":
            pcm = pcm16_to_bytes(ulaw_to_pcm16(raw))
        elif len(raw) % 2:
            self._refuse(session, "invalid_value", "Invalid 'audio': odd PCM16.", event.event_id)
            return
        else:
            pcm = raw
        with session._lock:
            session.received_audio.extend(pcm)
        session.appends.append(AppendRecord(len(raw), time.monotonic()))
        session._buffer.extend(pcm)
        session._frame.extend(pcm)
        frame_bytes = 2 * session.input_rate_hz * VAD_FRAME_MS // 1000
        while len(session._frame) >= frame_bytes:
            frame = bytes(session._frame[:frame_bytes])
            del session._frame[:frame_bytes]
            session._audio_ms += VAD_FRAME_MS
            self._vad(session, rms(pcm16_from_bytes(frame)) > SPEECH_RMS)

    def _vad(self, session: RealtimeSession, speech: bool) -> None:
        vad = session.turn_detection
        if not vad or vad.get("type") != "server_vad":
            return
        if speech:
            session._silence_ms = 0
            session._speech_ms += VAD_FRAME_MS
            if session._speaking_item is None:
                session._speaking_item = new_id("item")
                session.send(
                    wire.event(
                        "input_audio_buffer.speech_started",
                        audio_start_ms=session._audio_ms - VAD_FRAME_MS,
                        item_id=session._speaking_item,
                    )
                )
            return
        if session._speaking_item is None:
            return
        session._silence_ms += VAD_FRAME_MS
        if session._silence_ms >= int(vad.get("silence_duration_ms", 500)):
            session.send(
                wire.event(
                    "input_audio_buffer.speech_stopped",
                    audio_end_ms=session._audio_ms - session._silence_ms,
                    item_id=session._speaking_item,
                )
            )
            self._commit(session, None)

    def _commit(self, session: RealtimeSession, event_id: Any) -> None:
        buffered_ms = 1000 * len(session._buffer) // 2 // session.input_rate_hz
        if buffered_ms < self.min_commit_ms:
            self._refuse(
                session,
                "input_audio_buffer_commit_empty",
                f"buffer too small: {buffered_ms}ms, at least {self.min_commit_ms}ms needed",
                event_id,
            )
            return
        item = Item(session._speaking_item or new_id("item"), "user", bytes(session._buffer))
        item.speech_ms = session._speech_ms
        session._buffer.clear()
        session._speaking_item, session._silence_ms, session._speech_ms = None, 0, 0
        previous = session.conversation[-1].id if session.conversation else None
        session.conversation.append(item)
        transcript = "speech " if session.transcription else None
        session.send(
            wire.event("input_audio_buffer.committed", item_id=item.id, previous_item_id=previous)
        )
        user_item = wire.user_audio_item(item.id, transcript)
        session.send(
            wire.event("conversation.item.added", item=user_item, previous_item_id=previous)
        )
        session.send(
            wire.event("conversation.item.done", item=user_item, previous_item_id=previous)
        )
        if transcript:
            common = {"item_id": item.id, "content_index": 0}
            session.send(
                wire.event(
                    "conversation.item.input_audio_transcription.delta", delta=transcript, **common
                )
            )
            session.send(
                wire.event(
                    "conversation.item.input_audio_transcription.completed",
                    transcript=transcript,
                    usage={"type": "duration", "seconds": buffered_ms / 1000},
                    **common,
                )
            )
        vad = session.turn_detection or {}
        if vad.get("create_response", True) and event_id is None:
            self._respond(session, "auto", session.instructions, None)

    # -- responses and the conversation ---------------------------------------------------

    def _on_response_create(self, session: RealtimeSession, event: ResponseCreateEvent) -> None:
        params = event.response
        conversation = (params.conversation if params else None) or "auto"
        instructions = (params.instructions if params else None) or session.instructions
        metadata = dict(params.metadata) if params and params.metadata else None
        if session._responding and conversation == "auto":
            self._refuse(
                session,
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress.",
                event.event_id,
            )
            return
        self._respond(session, conversation, instructions, metadata)

    def _respond(
        self,
        session: RealtimeSession,
        conversation: str,
        instructions: str,
        metadata: dict[str, Any] | None,
    ) -> None:
        response_id = new_id("resp")
        context = tuple(item.id for item in session.conversation)
        session.responses.append(
            ResponseRecord(response_id, conversation, instructions, context, metadata)
        )
        in_band = conversation != "none"
        conv_id = "conv_" + session.id if in_band else None
        item_id = new_id("item")
        code = language_of(instructions)
        speech_ms = sum(item.speech_ms for item in session.conversation if item.role == "user")
        chunks = -(-speech_ms // OUTPUT_CHUNK_MS)
        word = OUTPUT_WORDS.get(code or "", "word ")
        session._responding = in_band
        send = session.send
        send(
            wire.event(
                "response.created",
                response=wire.response_object(response_id, "in_progress", conv_id, [], metadata),
            )
        )
        assistant = wire.assistant_audio_item(item_id, "", "in_progress")
        send(
            wire.event(
                "response.output_item.added",
                response_id=response_id,
                output_index=0,
                item=assistant,
            )
        )
        common = {
            "response_id": response_id,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
        }
        part = {"type": "audio", "transcript": ""}
        send(wire.event("response.content_part.added", part=part, **common))
        for _ in range(chunks):
            send(
                wire.event("response.output_audio.delta", delta=self._tone(session, code), **common)
            )
            send(wire.event("response.output_audio_transcript.delta", delta=word, **common))
        transcript = word * chunks
        send(wire.event("response.output_audio.done", **common))
        send(wire.event("response.output_audio_transcript.done", transcript=transcript, **common))
        send(
            wire.event(
                "response.content_part.done", part={**part, "transcript": transcript}, **common
            )
        )
        done_item = wire.assistant_audio_item(item_id, transcript, "completed")
        send(
            wire.event(
                "response.output_item.done", response_id=response_id, output_index=0, item=done_item
            )
        )
        if in_band:
            session.conversation.append(Item(item_id, "assistant"))
        send(
            wire.event(
                "response.done",
                response=wire.response_object(
                    response_id, "completed", conv_id, [done_item], metadata
                ),
            )
        )
        session._responding = False

    def _tone(self, session: RealtimeSession, code: str | None) -> str:
        rate = TWILIO_RATE_HZ if session.output_format == "audio/pcmu" else ENGINE_RATE_HZ
        n = rate * OUTPUT_CHUNK_MS // 1000
        tone = sine(tone_for(code), n, rate, 8000.0, session.output_samples)
        session.output_samples += n
        raw = pcm16_to_ulaw(tone) if rate == TWILIO_RATE_HZ else pcm16_to_bytes(tone)
        return base64.b64encode(raw).decode("ascii")

    def _on_delete(self, session: RealtimeSession, event: ConversationItemDeleteEvent) -> None:
        for item in session.conversation:
            if item.id == event.item_id:
                session.conversation.remove(item)
                session.deleted.append(item.id)
                session.send(wire.event("conversation.item.deleted", item_id=item.id))
                return
        self._refuse(
            session,
            "item_not_found",
            f"Item with item_id not found: {event.item_id}",
            event.event_id,
        )
