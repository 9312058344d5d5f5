"""The Twilio Media Streams wire module: parsing, refusal of malformed input, serialising."""

from __future__ import annotations

import base64
import json

import pytest

from bridge.telephony.media_wire import (
    MAX_MEDIA_PAYLOAD_BYTES,
    Connected,
    Dtmf,
    Mark,
    Media,
    MediaProtocolError,
    Start,
    Stop,
    Unknown,
    clear_message,
    mark_message,
    media_message,
    media_messages,
    parse_message,
)

START = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "accountSid": "AC" + "1" * 32,
        "streamSid": "MZ" + "2" * 32,
        "callSid": "CA" + "3" * 32,
        "tracks": ["inbound"],
        "customParameters": {"bridgeCallSid": "CA" + "3" * 32, "leg": "caller"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
    "streamSid": "MZ" + "2" * 32,
}


def media_json(payload: bytes, **extra: object) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": "3",
            "streamSid": "MZ1",
            "media": {
                "track": "inbound",
                "chunk": "2",
                "timestamp": "40",
                "payload": base64.b64encode(payload).decode(),
            },
            **extra,
        }
    )


def test_parses_twilio_messages() -> None:
    assert parse_message('{"event":"connected","protocol":"Call","version":"1.0.0"}') == Connected(
        "Call", "1.0.0"
    )
    start = parse_message(json.dumps(START))
    assert isinstance(start, Start)
    assert start.call_sid == "CA" + "3" * 32
    assert start.custom_parameters["leg"] == "caller"
    assert (start.encoding, start.sample_rate_hz, start.channels) == ("audio/x-mulaw", 8000, 1)
    media = parse_message(media_json(b"\xff" * 160))
    assert media == Media("MZ1", "inbound", 40, b"\xff" * 160)
    assert parse_message('{"event":"mark","streamSid":"MZ1","mark":{"name":"c7"}}') == Mark(
        "MZ1", "c7"
    )
    assert parse_message(
        '{"event":"stop","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}'
    ) == Stop("MZ1", "CA1")
    assert parse_message(
        '{"event":"dtmf","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"5"}}'
    ) == Dtmf("MZ1", "5")
    assert parse_message('{"event":"brand-new"}') == Unknown("brand-new")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"event":"media"}',  # binary frame
        "not json",
        "[1, 2]",
        '{"no": "event"}',
        '{"event":"media","streamSid":"MZ1","media":{"payload":"***"}}',
        '{"event":"media","streamSid":"MZ1","media":{}}',
        '{"event":"start","start":{"streamSid":"MZ1"}}',
        '{"event":"start","start":{"streamSid":"MZ1","accountSid":"AC","callSid":"CA",'
        '"customParameters":{"a":1}}}',
        '{"event":"mark","streamSid":"MZ1","mark":{}}',
        "x" * 20_000,
    ],
)
def test_refuses_malformed_messages(raw: str | bytes) -> None:
    with pytest.raises(MediaProtocolError):
        parse_message(raw)


def test_refuses_oversized_media_payload_before_decoding() -> None:
    with pytest.raises(MediaProtocolError, match="too large"):
        parse_message(media_json(b"\x00" * (MAX_MEDIA_PAYLOAD_BYTES + 3)))


def test_serialises_commands_as_twilio_documents_them() -> None:
    media = json.loads(media_message("MZ9", b"\x01\x02"))
    assert media == {
        "event": "media",
        "streamSid": "MZ9",
        "media": {"payload": base64.b64encode(b"\x01\x02").decode()},
    }
    assert json.loads(mark_message("MZ9", "a1")) == {
        "event": "mark",
        "streamSid": "MZ9",
        "mark": {"name": "a1"},
    }
    assert json.loads(clear_message("MZ9")) == {"event": "clear", "streamSid": "MZ9"}


def test_round_trip_media_payload() -> None:
    payload = bytes(range(256))[:160]
    parsed = parse_message(
        media_message("MZ9", payload).replace('"media":{', '"media":{"track":"inbound",')
    )
    assert isinstance(parsed, Media) and parsed.payload == payload


def test_non_finite_numbers_are_not_a_crash() -> None:
    """json accepts 1e999 and -Infinity; int() of them raises OverflowError, not ValueError."""
    media = parse_message(
        media_json(b"\xff" * 160).replace('"timestamp": "40"', '"timestamp": 1e999')
    )
    assert isinstance(media, Media) and media.timestamp_ms is None
    start = json.loads(json.dumps(START))
    start["start"]["mediaFormat"]["sampleRate"] = "-Infinity"
    text = json.dumps(start).replace('"-Infinity"', "-Infinity")
    parsed = parse_message(text)
    assert isinstance(parsed, Start) and parsed.sample_rate_hz == -1


def test_payload_bound_is_exact() -> None:
    assert isinstance(parse_message(media_json(b"\x00" * MAX_MEDIA_PAYLOAD_BYTES)), Media)
    with pytest.raises(MediaProtocolError, match="too large"):
        parse_message(media_json(b"\x00" * (MAX_MEDIA_PAYLOAD_BYTES + 1)))


@pytest.mark.parametrize("sid", ["MZ0123456789abcdef0123456789abcdef", 'odd "sid" \\ é'])
@pytest.mark.parametrize("ulaw", [b"", bytes(range(160)), b"\xff" * 7])
def test_per_stream_media_messages_are_media_message(sid: str, ulaw: bytes) -> None:
    assert media_messages(sid)(ulaw) == media_message(sid, ulaw)
