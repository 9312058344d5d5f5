"""Bland's wire format (bridge.engines.bland.wire): what we send, accept and refuse."""

from __future__ import annotations

import base64
import json

import pytest

from bridge.engines.bland import wire


def test_create_body_uses_twilio_ulaw_without_a_sample_rate() -> None:
    body = wire.CreateSession("es", "en", voice_id="v-1", max_duration_s=1800).to_json()
    assert body == {
        "source_language": "es",
        "target_language": "en",
        "audio_protocol": "twilio_ulaw",
        "max_duration_seconds": 1800,
        "voice_id": "v-1",
    }
    assert "voice_id" not in wire.CreateSession("es", "en").to_json()


def test_created_session_is_parsed_and_checked() -> None:
    body = {
        "data": {
            "session_id": "9592342c-0ed2-4c5e-8ceb-16aa55c804a7",
            "ws_url": "wss://stream.example/ws/translate/opaque",
            "token": "t",
            "expires_at": "2026-06-04T18:15:07.885Z",
            "max_duration_seconds": 1800,
        },
        "errors": None,
    }
    created = wire.parse_created(body)
    assert created.session_id.startswith("9592") and created.max_duration_s == 1800
    broken_bodies: list[object] = [
        {"data": None},
        {"data": {"session_id": "x", "ws_url": "https://no"}},
        [],
    ]
    for broken in broken_bodies:
        with pytest.raises(wire.BlandProtocolError):
            wire.parse_created(broken)


def test_error_summary_is_one_short_line() -> None:
    body = {"data": None, "errors": [{"error": "TAAS_ORG_REQUIRED", "message": "org\nneeded"}]}
    assert wire.error_summary(body) == "TAAS_ORG_REQUIRED: org\nneeded"[:300]
    assert wire.error_summary({"errors": None}) == "no error detail"
    assert len(wire.end_body("x" * 500)["reason"]) == 200


def test_media_frames_are_twilio_shaped_with_string_numbers() -> None:
    frame = json.loads(wire.media_message("MZ1", 7, 6, 120, b"\xff" * 160))
    assert frame["event"] == "media" and frame["sequenceNumber"] == "7"
    assert frame["media"]["chunk"] == "6" and frame["media"]["timestamp"] == "120"
    assert base64.b64decode(frame["media"]["payload"]) == b"\xff" * 160
    start = json.loads(wire.start_message("MZ1", "CA1"))["start"]
    assert start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert json.loads(wire.stop_message("MZ1", 9, "CA1"))["event"] == "stop"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ('{"event":"media","media":{"payload":"/w=="}}', wire.Audio(b"\xff")),
        ('{"event":"mark","mark":{"name":"x"}}', wire.Ignored("mark")),
        ('{"type":"ready"}', wire.Ready()),
        (
            '{"type":"transcript","original":"hola","translation":"hello"}',
            wire.Transcript("hola", "hello"),
        ),
        ('{"type":"tts_complete"}', wire.TtsComplete()),
        ('{"type":"session_ended","reason":"max_duration"}', wire.SessionEnded("max_duration")),
        ('{"type":"error","code":"E","message":"m"}', wire.Error("E", "m")),
        ('{"type":"something_new"}', wire.Ignored("something_new")),
    ],
)
def test_server_messages_parse(text: str, parsed: wire.ServerMessage) -> None:
    assert wire.parse_server_message(text) == parsed


@pytest.mark.parametrize(
    "bad",
    [
        b"\x00",
        "not json",
        "[]",
        '{"nothing":1}',
        '{"event":"media"}',
        '{"event":"media","media":{"payload":"%%"}}',
    ],
)
def test_malformed_server_messages_are_refused(bad: str | bytes) -> None:
    with pytest.raises(wire.BlandProtocolError):
        wire.parse_server_message(bad)
