"""Twilio's side of the Media Streams wire, pure: what the simulator sends and how it judges
what the bridge sends back (the problems Twilio would log, in order)."""

from __future__ import annotations

import base64
import json

from bridge.sim import media_wire as wire

SID = "MZ" + "0" * 32


def bridge_media(payload: str, **extra: object) -> str:
    return json.dumps({"event": "media", "streamSid": SID, "media": {"payload": payload}, **extra})


def test_media_start_mark_and_stop_carry_the_stream_and_their_sequence() -> None:
    start = json.loads(wire.start_message(1, SID, "AC1", "CA1", {"lang": "es"}))
    assert start["start"]["customParameters"] == {"lang": "es"}
    assert start["sequenceNumber"] == "1" and start["streamSid"] == SID
    media = json.loads(wire.media_message(2, SID, 3, b"\xff" * 160))["media"]
    assert (media["chunk"], media["timestamp"]) == ("4", "60")  # chunks from 1, time in ms
    assert base64.b64decode(media["payload"]) == b"\xff" * 160
    assert json.loads(wire.mark_message(3, SID, "m1"))["mark"] == {"name": "m1"}
    assert json.loads(wire.stop_message(4, SID, "AC1", "CA1"))["sequenceNumber"] == "4"


def test_well_formed_messages_are_read_without_problems() -> None:
    audio = base64.b64encode(b"\x7f" * 160).decode()
    assert wire.read_message(bridge_media(audio), SID) == (wire.Media(b"\x7f" * 160), [])
    mark = json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "end"}})
    assert wire.read_message(mark, SID) == (wire.Mark("end"), [])
    clear = json.dumps({"event": "clear", "streamSid": SID})
    assert wire.read_message(clear, SID) == (wire.Clear(), [])


def test_unusable_messages_are_ignored_with_twilios_error_code() -> None:
    cases: dict[str | bytes, str] = {
        b"\x00": "31950: binary frame",
        "{": "31951: invalid JSON",
        "[]": "31951: message without an event",
        json.dumps({"event": "dance", "streamSid": SID}): "31951: unknown event 'dance'",
        json.dumps({"event": "clear", "streamSid": "MZx"}): "31951: clear with wrong streamSid",
        bridge_media("***"): "31951: media payload is not base64",
        bridge_media(""): "31951: media with an empty payload",
        json.dumps({"event": "mark", "streamSid": SID, "mark": {}}): "31951: mark without a name",
    }
    for message, problem in cases.items():
        received, problems = wire.read_message(message, SID)
        assert received is None and len(problems) == 1 and problems[0].startswith(problem)


def test_unknown_fields_are_reported_but_the_message_still_plays() -> None:
    audio = base64.b64encode(b"\x7f" * 160).decode()
    received, problems = wire.read_message(bridge_media(audio, track="outbound"), SID)
    assert received == wire.Media(b"\x7f" * 160)
    assert problems == ["31951: media with unknown fields ['track']"]
    # A problem found before the message turns out unusable is still reported first.
    received, problems = wire.read_message(bridge_media("", track="outbound"), SID)
    assert received is None
    assert problems == [
        "31951: media with unknown fields ['track']",
        "31951: media with an empty payload",
    ]
