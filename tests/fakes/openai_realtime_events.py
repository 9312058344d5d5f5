"""Pure wire module of the realtime voice stand-in: validate client events, build server events.

Client events are validated with the SDK's own ``RealtimeClientEvent`` type (GA shape), with
unknown parameters refused the way the real API does (see ``openai_events``). Server events
follow the GA reference: ``response.output_audio.delta``, ``conversation.item.added`` /
``.done``, ``conversation.item.input_audio_transcription.delta`` / ``.completed``.
Nothing here touches a socket.
"""

from __future__ import annotations

from typing import Any, get_args

import pydantic
from openai.types.realtime import RealtimeClientEvent

from tests.fakes.openai_events import ClientEventError, new_id, validate_client_event

JsonObject = dict[str, Any]
SESSION_LIFETIME_S = 3600

_ADAPTER: pydantic.TypeAdapter[RealtimeClientEvent] = pydantic.TypeAdapter(RealtimeClientEvent)
_MEMBER_BY_TYPE: dict[str, str] = {
    get_args(member.model_fields["type"].annotation)[0]: member.__name__
    for member in get_args(get_args(RealtimeClientEvent)[0])
}


def parse_client_event(raw: str | bytes) -> RealtimeClientEvent:
    """Parse and validate one client message; raise :class:`ClientEventError` if invalid."""
    return validate_client_event(raw, _ADAPTER, _MEMBER_BY_TYPE, _refuse_beta_shape)


def _refuse_beta_shape(data: JsonObject, event_id: str | None) -> None:
    session = data.get("session")
    # The retired beta shape (no session.type) is refused since 2026.
    if (
        data["type"] == "session.update"
        and isinstance(session, dict)
        and session.get("type") not in ("realtime", "transcription")
    ):
        raise ClientEventError(
            "beta_api_shape_disabled",
            "session.type is required (beta session shape is disabled).",
            "session.type",
            event_id,
        )


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
