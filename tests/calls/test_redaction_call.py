"""A whole call through the bridge (gunicorn, the Twilio and OpenAI stand-ins) in which both
parties read out a card number that the engine streams split across two fragments: the live
event stream, the stored record and the transcript downloads show "[card]", never the digits."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.bridge_process import OPENAI_KEY
from tests.call_events import follow, segments_from_both, wait_until
from tests.call_helpers import (
    BRIDGE_NUMBER,
    CALLER_NUMBER,
    LEAD_IN_S,
    Stack,
    agent_of,
    bridge_stack,
    speech,
    wait_call_over,
    wait_streaming,
)
from tests.console_call import Dialogue, DialogueTranslator
from tests.fakes.audio import AGENT_EN_8K_MULAW, CALLER_ES_8K_MULAW, load_wav
from tests.fakes.openai_translate import FakeTranslationServer
from tests.fakes.twilio import DialBehaviour

TOKEN = "redaction-test-token-3c9d1e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Each utterance as the fragments the engine streams: the number starts in one and ends in the
# next. The caller says 4111 1111 1111 1111 (Visa's test card) in words, its translation has
# digits; the agent says 5555 5555 5555 4444 (Mastercard's) in words, translated to digits.
UNO, FIVE = " uno" * 7, " five" * 7
CARD_DIALOGUE: Dialogue = {
    "en": (  # the caller (Spanish), translated for the agent
        (
            ("Mi tarjeta es cuatro" + UNO, UNO + " uno."),
            ("My card is 4111 1111", " 1111 1111."),
        ),
    ),
    "es": (  # the agent (English), translated for the caller
        (
            ("Your card" + FIVE + " five", " five five five five four four four four."),
            ("Su tarjeta 5555 5555", " 5555 4444."),
        ),
    ),
}
# Any of these in what the bridge shows or stores would be (part of) a card number.
LEAKS = ("4111", "1111", "5555", "4444", "uno uno", "five five", "four four")


@pytest.fixture
def redaction_stack(tmp_path: Path) -> Iterator[Stack]:
    env = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'calls.sqlite3'}",
        "ADMIN_TOKEN": TOKEN,
        # REDACT unset: redaction is on by default.
    }
    with (
        FakeTranslationServer(DialogueTranslator(CARD_DIALOGUE)) as openai,
        bridge_stack(tmp_path, env, openai) as stack,
    ):
        yield stack


def leaks_in(text: str) -> list[str]:
    return [leak for leak in LEAKS if leak in text.lower()]


@pytest.mark.slow
def test_a_card_number_split_across_fragments_is_masked_everywhere(redaction_stack: Stack) -> None:
    twilio, bridge = redaction_stack.twilio, redaction_stack.bridge
    api = f"{bridge.url}/api/calls"
    twilio.default_dial = DialBehaviour(audio=speech(AGENT_EN_8K_MULAW, LEAD_IN_S + 0.5))
    caller = twilio.place_call(speech(CALLER_ES_8K_MULAW), from_=CALLER_NUMBER, to=BRIDGE_NUMBER)
    wait_streaming(twilio, caller, agent_of(twilio, caller))
    events: list[tuple[str, Any]] = []
    opened = threading.Event()
    follower = threading.Thread(
        target=follow, args=(f"{api}/{caller.sid}/events", AUTH, events, opened, 60.0), daemon=True
    )
    follower.start()
    assert opened.wait(10)

    caller_speech_s = len(load_wav(CALLER_ES_8K_MULAW)[2]) / 8000
    assert wait_until(lambda: segments_from_both(events), LEAD_IN_S + caller_speech_s + 30), events
    caller.hangup()
    wait_call_over(bridge)
    follower.join(15)
    assert not follower.is_alive(), "the event stream did not end with the call"

    # Live: every fragment and segment the console received.
    live = json.dumps(events, ensure_ascii=False)
    assert leaks_in(live) == [], live
    shown = "".join(
        d["text"] for name, d in events if name == "fragment" and d["kind"] == "translation"
    )
    assert shown.count("[card]") == 2, events  # both directions, each once

    # Stored: the record the API serves and the transcript downloads.
    def record() -> dict[str, Any]:
        body: dict[str, Any] = requests.get(f"{api}/{caller.sid}", headers=AUTH, timeout=5).json()
        return body

    assert wait_until(lambda: record().get("ended_at") is not None, 10)
    r = record()
    assert leaks_in(json.dumps(r, ensure_ascii=False)) == [], r
    by_direction = {s["direction"]: s for s in r["segments"]}
    assert by_direction["caller_to_agent"]["translated_text"] == "My card is [card]."
    assert by_direction["caller_to_agent"]["source_text"] == "Mi tarjeta es [card]."
    assert by_direction["agent_to_caller"]["translated_text"] == "Su tarjeta [card]."
    assert by_direction["agent_to_caller"]["source_text"] == "Your card [card]."
    for download in ("transcript.txt", "transcript.vtt"):
        response = requests.get(f"{api}/{caller.sid}/{download}", headers=AUTH, timeout=5)
        assert response.status_code == 200
        assert "[card]" in response.text and leaks_in(response.text) == [], response.text
