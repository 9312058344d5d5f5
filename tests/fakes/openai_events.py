"""Pure wire module of the translation stand-in: validate client events, build server events.

Client events are validated with the SDK's own ``RealtimeTranslationClientEvent`` type. The SDK
models accept unknown keys silently (pydantic ``extra="allow"``) and pydantic ignores the SDK's
discriminator annotation, so on top of the type check this module rejects unknown parameters
the way the real API does (``unknown_parameter``) and reports errors for the member named by
``type`` only. Nothing here touches a socket.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pydantic
from openai.types.realtime import (
    RealtimeTranslationClientEvent,
    RealtimeTranslationInputAudioBufferAppendEvent,
    RealtimeTranslationSessionCloseEvent,
    RealtimeTranslationSessionUpdateEvent,
)

# The output languages gpt-realtime-translate accepts.
OUTPUT_LANGUAGES = frozenset(
    {"es", "pt", "fr", "ja", "ru", "zh", "de", "ko", "hi", "id", "vi", "it", "en"}
)
SESSION_LIFETIME_S = 3600

_CLIENT_EVENT_ADAPTER: pydantic.TypeAdapter[RealtimeTranslationClientEvent] = pydantic.TypeAdapter(
    RealtimeTranslationClientEvent
)
_MEMBER_BY_TYPE: dict[str, str] = {
    "session.update": RealtimeTranslationSessionUpdateEvent.__name__,
    "session.input_audio_buffer.append": RealtimeTranslationInputAudioBufferAppendEvent.__name__,
    "session.close": RealtimeTranslationSessionCloseEvent.__name__,
}

JsonObject = dict[str, Any]
E = TypeVar("E")


class ClientEventError(Exception):
    """A client event the real server would refuse with an ``error`` event."""

    def __init__(
        self, code: str, message: str, param: str | None = None, event_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id = event_id


def new_id(prefix: str) -> str:
    """An id shaped like the API's (``event_…``, ``sess_…``)."""
    return f"{prefix}_{secrets.token_hex(10)}"


def unknown_parameters(model: pydantic.BaseModel, path: str = "") -> list[str]:
    """Dotted paths of keys the SDK model accepted only as extras (unknown to the API)."""
    found = [f"{path}.{key}" if path else key for key in (model.model_extra or {})]
    for name in type(model).model_fields:
        value = getattr(model, name)
        child = f"{path}.{name}" if path else name
        if isinstance(value, pydantic.BaseModel):
            found.extend(unknown_parameters(value, child))
    return found


def parse_client_event(raw: str | bytes) -> RealtimeTranslationClientEvent:
    """Parse and validate one client message; raise :class:`ClientEventError` if invalid."""
    return validate_client_event(raw, _CLIENT_EVENT_ADAPTER, _MEMBER_BY_TYPE)


def validate_client_event(
    raw: str | bytes,
    adapter: pydantic.TypeAdapter[E],
    member_by_type: dict[str, str],
    check: Callable[[JsonObject, str | None], None] = lambda data, event_id: None,
) -> E:
    """Parse one client message and validate it against the SDK union ``adapter`` whose
    members, by ``type``, are ``member_by_type``; ``check`` may refuse more (raise)."""
    if isinstance(raw, bytes):
        raise ClientEventError("invalid_type", "Binary frames are not supported; send JSON text.")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ClientEventError("invalid_json", f"Invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ClientEventError("invalid_type", "Expected a JSON object.")
    client_event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    event_type = data.get("type")
    if not isinstance(event_type, str) or event_type not in member_by_type:
        supported = ", ".join(repr(t) for t in member_by_type)
        raise ClientEventError(
            "invalid_value",
            f"Invalid value: {event_type!r}. Supported values are: {supported}.",
            "type",
            client_event_id,
        )
    check(data, client_event_id)
    try:
        event = adapter.validate_python(data)
    except pydantic.ValidationError as exc:
        member = member_by_type[event_type]
        errors = [e for e in exc.errors() if e["loc"] and e["loc"][0] == member] or exc.errors()
        first = errors[0]
        param = ".".join(str(part) for part in first["loc"][1:]) or None
        code = "missing_required_parameter" if first["type"] == "missing" else "invalid_value"
        raise ClientEventError(code, first["msg"], param, client_event_id) from exc
    assert isinstance(event, pydantic.BaseModel)
    unknown = unknown_parameters(event)
    if unknown:
        raise ClientEventError(
            "unknown_parameter", f"Unknown parameter: '{unknown[0]}'.", unknown[0], client_event_id
        )
    return event


def session_object(
    session_id: str,
    model: str,
    expires_at: int,
    output_language: str | None,
    transcription_model: str | None,
    noise_reduction: JsonObject | None,
) -> JsonObject:
    """A ``RealtimeTranslationSession`` object as the server reports it."""
    return {
        "id": session_id,
        "type": "translation",
        "model": model,
        "expires_at": expires_at,
        "audio": {
            "input": {
                "transcription": (
                    {"model": transcription_model} if transcription_model is not None else None
                ),
                "noise_reduction": noise_reduction,
            },
            "output": {"language": output_language},
        },
    }


def session_event(event_type: str, session: JsonObject) -> JsonObject:
    """``session.created`` or ``session.updated`` carrying ``session``."""
    return {"type": event_type, "event_id": new_id("event"), "session": session}


def error_event(
    error_type: str,
    code: str | None,
    message: str,
    param: str | None = None,
    client_event_id: str | None = None,
) -> JsonObject:
    """An ``error`` server event (``RealtimeErrorEvent``)."""
    return {
        "type": "error",
        "event_id": new_id("event"),
        "error": {
            "type": error_type,
            "code": code,
            "message": message,
            "param": param,
            "event_id": client_event_id,
        },
    }


def output_audio_delta(delta_b64: str, elapsed_ms: int, sample_rate: int = 24000) -> JsonObject:
    """A ``session.output_audio.delta`` event."""
    return {
        "type": "session.output_audio.delta",
        "event_id": new_id("event"),
        "delta": delta_b64,
        "sample_rate": sample_rate,
        "channels": 1,
        "format": "pcm16",
        "elapsed_ms": elapsed_ms,
    }


def transcript_delta(event_type: str, text: str, elapsed_ms: int) -> JsonObject:
    """A ``session.output_transcript.delta`` or ``session.input_transcript.delta`` event."""
    return {
        "type": event_type,
        "event_id": new_id("event"),
        "delta": text,
        "elapsed_ms": elapsed_ms,
    }


def closed_event() -> JsonObject:
    """The terminal ``session.closed`` event."""
    return {"type": "session.closed", "event_id": new_id("event")}


def expiry_from_now() -> int:
    """``expires_at`` (epoch seconds) for a session created now."""
    return int(time.time()) + SESSION_LIFETIME_S


# Server messages a client must skip, not die of: not JSON, not an object, no type, a type of
# the wrong kind, known events with fields of the wrong type, an event type it does not know.
MALFORMED_MESSAGES: tuple[str, ...] = (
    "this is not JSON {",
    "[1, 2, 3]",
    '"a bare string"',
    "{}",
    '{"type": 5}',
    '{"type": "session.output_audio.delta", "event_id": "event_bad1", "delta": 5}',
    '{"type": "session.output_transcript.delta", "event_id": "event_bad2", "delta": {"x": 1}}',
    '{"type": "response.output_audio.delta", "event_id": "event_bad3", "delta": 5}',
    '{"type": "response.done", "event_id": "event_bad4", "response": null}',
    '{"type": "session.from_the_future", "event_id": "event_bad5"}',
)


def config_refusal(client_event_id: str | None) -> JsonObject:
    """The ``error`` answering a ``session.update`` the server will not apply."""
    return error_event(
        "invalid_request_error",
        "invalid_value",
        "Invalid session configuration.",
        "session",
        client_event_id,
    )
