"""Numbers said on a call are masked (bridge/calls/redact.py): cards, IBANs, national IDs and
phone numbers, written or spoken, whole or split across live fragments; other text stays."""

from __future__ import annotations

import time

import pytest

from bridge.calls.call import Call
from bridge.calls.events import CallEvent, SegmentClosed, TextFragment
from bridge.calls.redact import MAX_HELD_CHARS, FragmentRedactor, Redactor
from bridge.calls.transcript import SEGMENT_GAP_MS, DirectionTranscript
from bridge.ops.metrics import Metrics
from bridge.settings.privacy import REDACT_KINDS, redact_kinds
from bridge.settings.values import ConfigError
from tests.call_events import wait_until

ALL = Redactor()
CARD = "4111 1111 1111 1111"  # Visa's test number: Luhn-valid


@pytest.mark.parametrize(
    ("said", "masked"),
    [
        (f"my card is {CARD} thanks", "my card is [card] thanks"),
        ("card 4111-1111-1111-1111.", "card [card]."),
        ("5555555555554444", "[card]"),
        ("four one one one one one one one one one one one one one one one.", "[card]."),
        (", ".join(["Four"] + ["one"] * 15), "[card]"),
        ("es cuatro uno uno uno uno uno uno uno uno uno uno uno uno uno uno uno", "es [card]"),
        ("4111 1111 one one one one uno uno uno uno", "[card]"),  # digits and words mixed
        ("call me at +1 415 555 0100 please", "call me at [phone] please"),
        ("mi número es seis cero cero uno dos tres cuatro cinco seis", "mi número es [phone]"),
        ("IBAN GB82 WEST 1234 5698 7654 32 ok", "IBAN [iban] ok"),
        ("cuenta ES91 2100 0418 4502 0005 1332, vale", "cuenta [iban], vale"),
        ("DNI 12345678Z y NIE X1234567L", "DNI [id] y NIE [id]"),
        ("my SSN is 536-90-4399", "my SSN is [id]"),
    ],
)
def test_numbers_are_masked_by_kind(said: str, masked: str) -> None:
    assert ALL.redact(said) == masked


@pytest.mark.parametrize(
    "said",
    [
        "It costs 1,500,000 dollars in 2026, room 12, order 4411.",
        "No one ever called me, two of them said so; la una y dos.",
        "Llamo por la factura de marzo: me cobraron dos veces el mismo servicio.",
        "GB82 is a code, X123A is not a NIE",
    ],
)
def test_other_text_and_short_numbers_stay_as_said(said: str) -> None:
    assert ALL.redact(said) == said


def test_a_luhn_invalid_long_run_is_still_masked_as_a_phone_or_account_number() -> None:
    assert ALL.redact("4111 1111 1111 1112") == "[phone]"
    assert Redactor(frozenset({"card"})).redact("4111 1111 1111 1112") == "4111 1111 1111 1112"


def test_nine_bare_digits_are_a_phone_number_unless_only_ids_are_masked() -> None:
    assert ALL.redact("536 904 399") == "[phone]"
    assert Redactor(frozenset({"national_id"})).redact("536904399") == "[id]"


def test_only_the_chosen_kinds_are_masked_and_off_masks_nothing() -> None:
    text = f"card {CARD}, phone 415 555 0100"
    assert Redactor(frozenset({"card"})).redact(text) == "card [card], phone 415 555 0100"
    assert Redactor(frozenset()).redact(text) == text


def test_redact_setting_parses_kinds_and_refuses_unknown_ones() -> None:
    assert redact_kinds(None) == frozenset(REDACT_KINDS)  # on by default
    assert redact_kinds("off") == frozenset()
    assert redact_kinds(" Card, phone ") == {"card", "phone"}
    with pytest.raises(ConfigError, match="REDACT"):
        redact_kinds("card,passport")


def stream(fragments: list[str]) -> list[str]:
    live = FragmentRedactor(ALL)
    return [live.push(f, i) for i, f in enumerate(fragments)] + [live.flush()]


def test_a_card_split_across_fragments_never_shows_its_digits() -> None:
    shown = stream(["My card is 4111 1111", " 1111 1111 and", " the expiry is 12 27."])
    assert "".join(shown) == "My card is [card] and the expiry is 12 27."
    assert shown[0] == "My card is "  # the start of the number waits for the rest
    assert not any("1111" in s for s in shown)


def test_spoken_digits_split_mid_word_are_held_until_they_end() -> None:
    words = "cuatro uno uno uno uno uno uno uno uno uno uno uno uno uno uno uno"
    shown = stream(["Mi tarjeta es " + words[:30], words[30:], " gracias."])
    assert "".join(shown) == "Mi tarjeta es [card] gracias."
    assert not any("uno" in s for s in shown)


def test_words_that_cannot_start_a_number_are_shown_at_once() -> None:
    live = FragmentRedactor(ALL)
    assert live.push("Hello", 0) == "Hello"
    assert live.push(" good morning", 1) == " good morning"
    assert live.push(", my card is fo", 2) == ", my card is "  # "fo" may become "four"
    assert live.push("ur", 3) == ""
    assert live.push(" dogs", 4) == "four dogs"


def test_held_text_is_bounded_and_released_masked() -> None:
    live = FragmentRedactor(ALL)
    assert live.push("one " * 10, 0) == ""
    released = live.push("one " * (MAX_HELD_CHARS // 4), 1)
    assert released.startswith("[phone]") and live.held == ""


def test_a_pathological_fragment_is_handled_quickly() -> None:
    live = FragmentRedactor(ALL)
    start = time.process_time()
    live.push("1" * 150 + "x" + "2" * 150 + "!", 0)  # would backtrack exponentially if split
    assert time.process_time() - start < 1.0


def test_the_transcript_masks_segments_and_holds_live_numbers_until_a_pause() -> None:
    t = DirectionTranscript("CA1", "agent_to_caller")
    assert t.live("translation", "Su tarjeta 4111 1111", 1000) == "Su tarjeta "
    t.add("translation", "Su tarjeta 4111 1111", 1000)
    assert t.live("translation", " 1111 1111", 1200) == ""
    t.add("translation", " 1111 1111", 1200)
    assert t.release_held(1200 + SEGMENT_GAP_MS - 1) == []
    assert t.release_held(1200 + SEGMENT_GAP_MS) == [("translation", "[card]")]
    closed = t.tick(1200 + SEGMENT_GAP_MS)
    assert closed is not None and closed.translated_text == "Su tarjeta [card]"


def test_with_redaction_off_the_transcript_keeps_numbers() -> None:
    t = DirectionTranscript("CA1", "caller_to_agent", Redactor(frozenset()))
    assert t.live("source", f"card {CARD}", 0) == f"card {CARD}"
    t.add("source", f"card {CARD}", 0)
    closed = t.flush()
    assert closed is not None and closed.source_text == f"card {CARD}"


def published_call(published: list[CallEvent]) -> Call:
    return Call(
        caller_sid="CA1",
        caller_number="+34911222333",
        dialled_number="+15550002222",
        caller_language="es",
        agent_language="en",
        metrics=Metrics(),
        publish=published.append,
    )


def shown(published: list[CallEvent]) -> str:
    return "".join(e.text for e in list(published) if isinstance(e, TextFragment))


def test_a_call_publishes_held_numbers_masked_after_a_pause() -> None:
    published: list[CallEvent] = []
    call = published_call(published)
    call.add_text("agent_to_caller", "translation", "Su tarjeta 4111 1111")
    call.add_text("agent_to_caller", "translation", " 1111 1111")
    assert shown(published) == "Su tarjeta "

    def released() -> bool:
        call.tick()  # what the watchdog does, about once a second
        return shown(published) == "Su tarjeta [card]"

    assert wait_until(released, timeout=10), published
    assert call.transcript_text("agent_to_caller", "translation") == "Su tarjeta [card]"
    assert not any("1111" in repr(e) for e in published)


def test_a_call_shows_what_is_held_when_it_ends() -> None:
    published: list[CallEvent] = []
    call = published_call(published)
    call.add_text("caller_to_agent", "source", "cuatro uno uno uno uno uno uno uno")
    call.add_text("caller_to_agent", "source", " uno uno uno uno uno uno uno uno")
    assert shown(published) == ""
    call.flush_transcript()
    assert shown(published) == "[card]"
    [segment] = [e for e in published if isinstance(e, SegmentClosed)]
    assert segment.source_text == "[card]"
    call.flush_transcript()  # idempotent: nothing more
    assert shown(published) == "[card]"
