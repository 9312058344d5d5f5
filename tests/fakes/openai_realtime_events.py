"""Pure wire module of the realtime voice stand-in: validate client events, build server events.

Client events are validated with the SDK's own ``RealtimeClientEvent`` type (GA shape), with
unknown parameters refused the way the real API does (see ``openai_events``). Server events
follow the GA reference: ``response.output_audio.delta``, ``conversation.item.added`` /
``.done``, ``conversation.item.input_audio_transcription.delta`` / ``.completed``.
Nothing here touches a socket.
"""

from __future__ import annotations

import json
from typing import Any, get_args

import pydantic
from openai.types.realtime import RealtimeClientEvent

from tests.fakes.openai_events import ClientEventError, new_id, unknown_parameters

JsonObject = dict[str, Any]
SESSION_LIFETIME_S = 3600

_ADAPTER: pydantic.TypeAdapter[RealtimeClientEvent] = pydantic.TypeAdapter(RealtimeClientEvent)
_MEMBER_BY_TYPE: dict[str, str] = {
    get_args(member.model_fields["type"].annotation)[0]: member.__name__
    for member in get_args(get_args(RealtimeClientEvent)[0])
}


def parse_client_event(raw: str | bytes) -> RealtimeClientEvent:
    """Parse and validate one client message; raise :class:`ClientEventError` if invalid."""
    if isinstance(raw, bytes):
        raise ClientEventError("invalid_type", "Binary frames are not supported; send JSON text.")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ClientEventError("invalid_json", f"Invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ClientEventError("invalid_type", "Expected a JSON object.")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    event_type = data.get("type")
    if not isinstance(event_type, str) or event_type not in _MEMBER_BY_TYPE:
        raise ClientEventError("invalid_value", f"Invalid value: {event_type!r}.", "type", event_id)
    if event_type == "session.update":
        session = data.get("session")
        if isinstance(session, dict) and session.get("type") not in ("realtime", "transcription"):
            # The retired beta shape (no session.type) is refused since 2026.
            raise ClientEventError(
                "beta_api_shape_disabled",
                "session.type is required (beta session shape is disabled).",
                "session.type",
                event_id,
            )
    try:
        event = _ADAPTER.validate_python(data)
    except pydantic.ValidationError as exc:
        member = _MEMBER_BY_TYPE[event_type]
        errors = [e for e in exc.errors() if e["loc"] and e["loc"][0] == member] or exc.errors()
        first = errors[0]
        param = ".".join(str(part) for part in first["loc"][1:]) or None
        code = "missing_required_parameter" if first["type"] == "missing" else "invalid_value"
        raise ClientEventError(code, first["msg"], param, event_id) from exc
    unknown = unknown_parameters(event)
    if unknown:
        raise ClientEventError(
            "unknown_parameter", f"Unknown parameter: '{unknown[0]}'.", unknown[0], event_id
        )
    return event


def event(event_type: str, **fields: Any) -> JsonObject:
    """A server event of ``event_type`` with a fresh ``event_id``."""
    return {"type": event_type, "event_id": new_id("event"), **fields}


def session_object(session_id: str, model: str, expires_at: int, config: JsonObject) -> JsonObject:
    """The realtime session object as ``session.created``/``session.updated`` report it."""
    return {
        "id": session_id,
        "object": "realtime.session",
        "type": "realtime",
        "model": model,
        "expires_at": expires_at,
        **config,
    }


def user_audio_item(item_id: str, transcript: str | None) -> JsonObject:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_audio", "transcript": transcript}],
    }


def assistant_audio_item(item_id: str, transcript: str, status: str) -> JsonObject:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_audio", "transcript": transcript}],
    }


def response_object(
    response_id: str,
    status: str,
    conversation_id: str | None,
    output: list[JsonObject],
    metadata: JsonObject | None,
) -> JsonObject:
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "status_details": None,
        "conversation_id": conversation_id,
        "output": output,
        "output_modalities": ["audio"],
        "metadata": metadata,
        "usage": None,
    }
