"""The caller's language menu, the agent's language and whisper, and machine detection.

Pure tests pin down how answers are matched and how the new settings are read; the rest run
whole calls through the real bridge under gunicorn, with the Twilio stand-in answering each
``<Gather>`` through the signed webhooks and the OpenAI stand-in recording which output
language each session was given.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from bridge.engines.registry import settings_from_env
from bridge.settings.env import ConfigError, Settings
from bridge.settings.prompts import load_prompts, prompt
from bridge.sim.answers import gather_params
from bridge.sim.twiml import Gather, Redirect, Say, parse_twiml
from bridge.telephony.language_menu import LanguageMenu, normalise
from bridge.telephony.rest import DialRequest, TwilioRest
from tests.bridge_process import ACCOUNT_SID, AGENT_NUMBER, AUTH_TOKEN, OPENAI_KEY, free_port
from tests.call_helpers import (
    BRIDGE_NUMBER,
    CALLER_NUMBER,
    Stack,
    agent_of,
    bridge_stack,
    new_sessions,
    tone_ulaw,
    wait_call_over,
    wait_streaming,
)
from tests.fakes.audio import ulaw_silence
from tests.fakes.openai_translate import FakeTranslationServer
from tests.fakes.twilio import DialBehaviour, FakeCall, FakeTwilio, GatherAnswer

STRANGER = "+34600000000"
MENU = ("es", "en", "fr")  # keys 2, 1, 3 in config/languages.json
BASE = {
    "PUBLIC_BASE_URL": "https://bridge.example.com",
    "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
    "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    "AGENT_NUMBER": AGENT_NUMBER,
    "OPENAI_API_KEY": OPENAI_KEY,
}


def settings(**overrides: str) -> Settings:
    return settings_from_env({**BASE, **overrides}, env_file=None)


# -- matching answers (pure) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def menu() -> LanguageMenu:
    return LanguageMenu(MENU, load_prompts(), "https://bridge.example.com/twilio/language")


@pytest.mark.parametrize(
    ("digits", "speech", "chosen"),
    [
        ("2", "", "es"),
        ("1", "", "en"),
        ("3", "", "fr"),
        ("2#", "", "es"),
        ("", "Español.", "es"),  # the name in itself, as a recogniser punctuates it
        ("", "espanol", "es"),  # accents folded
        ("", "ESPAÑOL", "es"),
        ("", "Spanish, please", "es"),  # the English name
        ("", "castellano", "es"),
        ("", "I'd like English", "en"),
        ("", "inglés", "en"),  # named in the lead language
        ("", "Français", "fr"),
        ("", "francais", "fr"),
        ("", "French", "fr"),
        ("", "espaniol", "es"),  # misheard, still close
        ("", "2.", "es"),  # the key said aloud
        ("", "", None),  # silence (the <Redirect> after the <Gather>)
        ("9", "", None),  # a key no option uses
        ("4", "", None),  # German's key, but German is not offered
        ("", "Deutsch", None),  # named, but not offered
        ("", "English or Spanish", None),  # ambiguous: ask again
        ("", "um, hello?", None),
    ],
)
def test_answers_pick_a_language(
    menu: LanguageMenu, digits: str, speech: str, chosen: str | None
) -> None:
    assert menu.choose(digits, speech) == chosen


def test_names_in_scripts_without_spaces_are_found() -> None:
    asian = LanguageMenu(("zh", "ja", "ko", "vi"), load_prompts(), "https://x/twilio/language")
    assert asian.choose("", "中文") == "zh"
    assert asian.choose("", "日本語でお願いします") == "ja"
    assert asian.choose("", "한국어요") == "ko"
    assert asian.choose("", "Tiếng Việt") == "vi"
    assert asian.choose("", "tieng viet") == "vi"
    assert asian.choose("", "Mandarin") == "zh"


def test_normalise_folds_case_accents_and_punctuation() -> None:
    assert normalise("¡Español!") == "espanol"
    assert normalise("  Tiếng   Việt. ") == "tieng viet"
    assert normalise("Đức") == "duc"


def test_menu_twiml_says_each_option_in_its_own_voice(menu: LanguageMenu) -> None:
    verbs = parse_twiml(menu.offer(1))
    gather = verbs[0]
    assert isinstance(gather, Gather)
    assert gather.input == frozenset({"dtmf", "speech"}) and gather.num_digits == 1
    assert gather.action == "https://bridge.example.com/twilio/language?attempt=1"
    assert gather.language == "es-US"  # the lead language's recogniser
    assert {"Español", "English", "Français", "Spanish", "French"} <= set(gather.hints)
    says = [(s.text, s.language, s.voice) for s in gather.nested]  # type: ignore[union-attr]
    assert says == [
        (prompt("menu_option", "es", digit="2", name="Español").text, "es-US", "Polly.Lupe"),
        (prompt("menu_option", "en", digit="1", name="English").text, "en-US", "Polly.Joanna"),
        (prompt("menu_option", "fr", digit="3", name="Français").text, "fr-FR", "Polly.Lea"),
    ]
    # Silence falls through the <Gather> to a <Redirect> to the same attempt.
    assert verbs[1:] == [Redirect("https://bridge.example.com/twilio/language?attempt=1")]
    retry = parse_twiml(menu.offer(2))[0]
    assert isinstance(retry, Gather) and retry.action is not None
    assert retry.action.endswith("attempt=2")
    assert retry.nested[0] == Say(prompt("menu_retry", "es").text, "Polly.Lupe", "es-US")


def test_the_stand_in_posts_what_twilio_posts() -> None:
    keys_and_speech = Gather(input=frozenset({"dtmf", "speech"}), num_digits=1)
    assert gather_params(keys_and_speech, GatherAnswer(digits="21")) == {
        "Digits": "2",
        "FinishedOnKey": "",
    }
    assert gather_params(Gather(), GatherAnswer(digits="12#")) == {
        "Digits": "12",
        "FinishedOnKey": "#",
    }
    said = gather_params(keys_and_speech, GatherAnswer(speech="Español", confidence=0.5))
    assert said == {"SpeechResult": "Español", "Confidence": "0.50000000"}
    assert gather_params(Gather(), GatherAnswer(speech="Español")) is None  # dtmf only
    assert gather_params(keys_and_speech, None) is None


# -- settings (pure) ---------------------------------------------------------------------------


def test_language_settings_defaults() -> None:
    s = settings()
    assert s.caller_languages == ("es",) and s.lead_language == "es"
    assert s.agent_languages == () and s.agent_language_for(AGENT_NUMBER) == "en"
    assert s.agent_machine_detection is True
    assert settings(CALLER_LANGUAGE="fr").caller_languages == ("fr",)


def test_language_settings_are_read() -> None:
    s = settings(
        CALLER_LANGUAGES=" EN, es ,zh",
        AGENT_LANGUAGES=f"{AGENT_NUMBER}=de, +4930123456=fr,sip:desk@pbx.example.com=it",
        AGENT_MACHINE_DETECTION="off",
    )
    assert s.caller_languages == ("en", "es", "zh") and s.lead_language == "en"
    assert s.agent_language_for(AGENT_NUMBER) == "de"
    assert s.agent_language_for("sip:desk@pbx.example.com") == "it"
    assert s.agent_language_for("+15550000000") == "en"  # not listed: AGENT_LANGUAGE
    assert s.agent_machine_detection is False


@pytest.mark.parametrize(
    ("overrides", "variable", "words"),
    [
        ({"CALLER_LANGUAGES": "es,tr"}, "CALLER_LANGUAGES", "'tr' is not a language of"),
        ({"CALLER_LANGUAGES": "es,es"}, "CALLER_LANGUAGES", "listed twice"),
        ({"CALLER_LANGUAGES": " , "}, "CALLER_LANGUAGES", "lists no language"),
        ({"CALLER_LANGUAGES": "fr,vi,de"}, "CALLER_LANGUAGES", "vi and de both use key 4"),
        ({"AGENT_LANGUAGES": "+15551230000"}, "AGENT_LANGUAGES", "not number=language"),
        ({"AGENT_LANGUAGES": "555=de"}, "AGENT_LANGUAGES", "not number=language"),
        ({"AGENT_LANGUAGES": "+15551230000=xx"}, "AGENT_LANGUAGES", "'xx'"),
        ({"AGENT_LANGUAGES": "+15551230000=de,+15551230000=fr"}, "AGENT_LANGUAGES", "twice"),
        ({"AGENT_MACHINE_DETECTION": "maybe"}, "AGENT_MACHINE_DETECTION", "not on or off"),
    ],
)
def test_bad_language_settings_name_the_variable(
    overrides: dict[str, str], variable: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        settings(**overrides)
    message = str(info.value)
    assert message.startswith(f"{variable}: ") and words in message and "\n" not in message


# -- whole calls -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def menu_stack(
    tmp_path_factory: pytest.TempPathFactory, openai_fake: FakeTranslationServer
) -> Iterator[Stack]:
    env = {
        "CALLER_LANGUAGES": ",".join(MENU),
        "AGENT_LANGUAGES": f"{AGENT_NUMBER}=de",  # AGENT_LANGUAGE stays en: the number wins
        "ALLOWED_CALLERS": CALLER_NUMBER,
    }
    with bridge_stack(tmp_path_factory.mktemp("menu"), env, openai_fake) as stack:
        yield stack


def call_in(
    stack: Stack, *answers: GatherAnswer | None, seconds: float = 20.0
) -> tuple[FakeCall, FakeCall]:
    """A caller who answers the menu with ``answers``; returns them and the agent, both up."""
    caller = stack.twilio.place_call(
        tone_ulaw(seconds), from_=CALLER_NUMBER, to=BRIDGE_NUMBER, gather_answers=answers
    )
    agent = agent_of(stack.twilio, caller)
    wait_streaming(stack.twilio, caller, agent)
    return caller, agent


def hang_up(stack: Stack, caller: FakeCall, agent: FakeCall) -> None:
    caller.hangup()
    assert caller.wait_ended(10) and agent.wait_ended(10)
    wait_call_over(stack.bridge)


def menu_posts(stack: Stack, caller: FakeCall) -> list[str]:
    """The language webhooks Twilio made for ``caller``: each one's attempt and answer."""
    return [
        f"{w.url.rsplit('?', 1)[1]} {w.params.get('Digits') or w.params.get('SpeechResult') or '-'}"
        for w in stack.twilio.webhooks
        if "/twilio/language" in w.url and w.params.get("CallSid") == caller.sid
    ]


def test_keypad_choice_drives_the_sessions_prompts_and_whisper(menu_stack: Stack) -> None:
    openai = menu_stack.openai
    assert openai is not None
    before = len(openai.sessions)
    caller, agent = call_in(menu_stack, GatherAnswer(digits="3"))

    # The menu: one line per option, each in its own language and voice; then the caller's
    # greeting in the language they chose.
    assert caller.said == [
        prompt("menu_option", "es", digit="2", name="Español").text,
        prompt("menu_option", "en", digit="1", name="English").text,
        prompt("menu_option", "fr", digit="3", name="Français").text,
        prompt("connecting", "fr").text,
    ]
    assert (caller.says[-1].language, caller.says[-1].voice) == ("fr-FR", "Polly.Lea")
    assert menu_posts(menu_stack, caller) == ["attempt=1 3"]

    # French drives the agent→caller session; the agent's number sets German for the other.
    sessions = new_sessions(openai, before)
    assert sorted(s.output_language or "" for s in sessions) == ["de", "fr"]

    # The agent hears the whisper first, in German, naming French in German.
    whisper = prompt("agent_whisper", "de", caller_language="Französisch").text
    assert whisper == "Gedolmetschter Anruf. Die anrufende Person spricht Französisch."
    assert agent.said == [whisper]
    assert agent.says[0].voice == "Polly.Vicki"
    hang_up(menu_stack, caller, agent)
    assert caller.violations == [] and agent.violations == []


@pytest.mark.parametrize(("said", "chosen"), [("Español.", "es"), ("English please", "en")])
def test_speech_choice(menu_stack: Stack, said: str, chosen: str) -> None:
    openai = menu_stack.openai
    assert openai is not None
    before = len(openai.sessions)
    caller, agent = call_in(menu_stack, GatherAnswer(speech=said))
    assert caller.said[-1] == prompt("connecting", chosen).text
    assert menu_posts(menu_stack, caller) == [f"attempt=1 {said}"]
    assert chosen in {s.output_language for s in new_sessions(openai, before)}
    hang_up(menu_stack, caller, agent)


def test_unrecognised_answers_reprompt_until_one_is_understood(menu_stack: Stack) -> None:
    caller, agent = call_in(
        menu_stack, GatherAnswer(speech="Klingon"), None, GatherAnswer(digits="1")
    )
    sorry = prompt("menu_retry", "es").text  # said in the lead language before each retry
    assert caller.said.count(sorry) == 2
    assert caller.said[-1] == prompt("connecting", "en").text
    # Silence fell through the <Gather> to the <Redirect>: an attempt with no answer.
    assert menu_posts(menu_stack, caller) == ["attempt=1 Klingon", "attempt=2 -", "attempt=3 1"]
    hang_up(menu_stack, caller, agent)


def test_three_failures_end_the_call_politely_without_dialling(menu_stack: Stack) -> None:
    twilio, bridge = menu_stack.twilio, menu_stack.bridge
    dialled = len(twilio.agent_calls())
    caller = twilio.place_call(
        ulaw_silence(8000 * 5),
        from_=CALLER_NUMBER,
        to=BRIDGE_NUMBER,
        gather_answers=(GatherAnswer(digits="9"), None, GatherAnswer(speech="hmm")),
    )
    assert caller.wait_ended(15)
    assert len(caller.gathers) == 3
    goodbyes = [prompt("menu_goodbye", code).text for code in MENU]
    assert caller.said[-3:] == goodbyes, "goodbye in every menu language, then hang up"
    assert [s.voice for s in caller.says[-3:]] == ["Polly.Lupe", "Polly.Joanna", "Polly.Lea"]
    assert caller.stream is None and caller.status == "completed"
    assert len(twilio.agent_calls()) == dialled, "nobody is dialled for a caller who never chose"
    assert bridge.metric("bridge_calls_refused_total", 'reason="no_language"') == 1
    assert bridge.metric("bridge_active_calls") == 0


def test_admission_is_checked_before_the_menu(menu_stack: Stack) -> None:
    caller = menu_stack.twilio.place_call(
        ulaw_silence(8000 * 5), from_=STRANGER, to=BRIDGE_NUMBER, gather_answers=(None,)
    )
    assert caller.wait_ended(10)
    assert caller.gathers == [], "a caller who will be declined hears no menu"
    assert caller.said == [prompt("not_allowed", "es").text]


def test_menu_webhook_is_signature_checked(menu_stack: Stack) -> None:
    twilio = menu_stack.twilio
    params = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": "CA" + "7" * 32,
        "From": CALLER_NUMBER,
        "To": BRIDGE_NUMBER,
        "Digits": "2",
    }
    for signature in ("none", "bad"):
        response = twilio.post_webhook("/twilio/language?attempt=1", params, signature=signature)
        assert response is not None and response.status_code == 403
    # The attempt is part of the signed URL: a caller cannot skip ahead by rewriting it.
    signed_for_1 = twilio.post_webhook("/twilio/language?attempt=1", {**params, "Digits": "9"})
    assert signed_for_1 is not None and signed_for_1.status_code == 200
    response = twilio.post_webhook("/twilio/language?attempt=7", {**params, "Digits": "9"})
    assert response is not None and response.status_code == 400


def test_the_chosen_language_carries_to_the_agent_unavailable_notice(menu_stack: Stack) -> None:
    twilio = menu_stack.twilio
    twilio.default_dial = DialBehaviour(outcome="busy", answer_delay_s=0.3)
    try:
        caller = twilio.place_call(
            ulaw_silence(8000 * 10),
            from_=CALLER_NUMBER,
            to=BRIDGE_NUMBER,
            gather_answers=(GatherAnswer(digits="1"),),
        )
        assert caller.wait_ended(15)
    finally:
        twilio.default_dial = DialBehaviour()
    assert caller.said[-1] == prompt("agent_unavailable", "en").text
    assert caller.says[-1].voice == "Polly.Joanna"
    wait_call_over(menu_stack.bridge)


# -- answering machine detection ----------------------------------------------------------------


def test_an_answering_machine_is_treated_like_no_answer(menu_stack: Stack) -> None:
    twilio, bridge = menu_stack.twilio, menu_stack.bridge
    twilio.default_dial = DialBehaviour(
        audio=tone_ulaw(20), answered_by="machine_start", amd_delay_s=1.0
    )
    try:
        caller, agent = call_in(menu_stack, GatherAnswer(digits="2"))
        assert caller.wait_ended(15) and agent.wait_ended(10)
    finally:
        twilio.default_dial = DialBehaviour()
    create = next(
        r
        for r in twilio.rest_requests
        if r.path.endswith("/Calls.json") and caller.sid in r.params["Twiml"][0]
    )
    assert create.params["MachineDetection"] == ["Enable"]
    assert create.params["AsyncAmd"] == ["true"]
    assert create.params["AsyncAmdStatusCallback"] == [f"{bridge.url}/twilio/amd"]
    amd = [w for w in twilio.webhooks if w.kind == "amd" and w.params["CallSid"] == agent.sid]
    assert [(w.params["AnsweredBy"], w.status) for w in amd] == [("machine_start", 204)]
    assert caller.said[-1] == prompt("agent_unavailable", "es").text
    assert agent.answered_by == "machine_start"
    assert not any(say.text == prompt("agent_unavailable", "de").text for say in agent.says)
    wait_call_over(bridge)
    assert bridge.metric("bridge_calls_ended_total", 'reason="agent_machine"') == 1


def test_a_human_answer_lets_the_call_go_on(menu_stack: Stack) -> None:
    twilio = menu_stack.twilio
    twilio.default_dial = DialBehaviour(audio=tone_ulaw(20), answered_by="human", amd_delay_s=0.3)
    try:
        caller, agent = call_in(menu_stack, GatherAnswer(digits="2"))
    finally:
        twilio.default_dial = DialBehaviour()
    assert twilio.wait_for(lambda: agent.answered_by == "human", 5)
    time.sleep(1.0)
    assert not caller.ended.is_set() and not agent.ended.is_set()
    amd = [w for w in twilio.webhooks if w.kind == "amd" and w.params["CallSid"] == agent.sid]
    assert [w.status for w in amd] == [204]
    hang_up(menu_stack, caller, agent)


def test_machine_detection_for_a_call_not_ours_is_a_no_op(menu_stack: Stack) -> None:
    params = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": "CA" + "8" * 32,
        "AnsweredBy": "machine_start",
        "MachineDetectionDuration": "2100",
    }
    response = menu_stack.twilio.post_webhook("/twilio/amd", params)
    assert response is not None and response.status_code == 204
    response = menu_stack.twilio.post_webhook("/twilio/amd", params, signature="bad")
    assert response is not None and response.status_code == 403


def test_a_dial_without_an_amd_callback_asks_for_no_detection() -> None:
    """What AGENT_MACHINE_DETECTION=off dials with: no AMD fields at all."""
    with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, f"http://127.0.0.1:{free_port()}") as twilio:
        twilio.default_dial = DialBehaviour(answer_delay_s=0.0, hangup_after_s=0.1)
        rest = TwilioRest(settings(ENGINE="relay", TWILIO_API_BASE_URL=twilio.rest_base_url))
        plain = rest.dial(
            DialRequest(AGENT_NUMBER, BRIDGE_NUMBER, "<Response/>", "https://x/s", 30)
        )
        detected = rest.dial(
            DialRequest(
                AGENT_NUMBER, BRIDGE_NUMBER, "<Response/>", "https://x/s", 30, "https://x/amd"
            )
        )
        creates = [r.params for r in twilio.rest_requests if r.path.endswith("/Calls.json")]
        assert "MachineDetection" not in creates[0] and "AsyncAmd" not in creates[0]
        assert creates[1]["MachineDetection"] == ["Enable"]
        assert creates[1]["AsyncAmdStatusCallbackMethod"] == ["POST"]
        assert twilio.calls[plain].ended.wait(5) and twilio.calls[detected].ended.wait(5)


def test_replayed_menu_webhooks_of_an_ended_call_dial_nobody(menu_stack: Stack) -> None:
    """The voice webhook (which offers the menu) and the menu's answer, re-posted with their
    valid signatures after the call ended: a goodbye and a hang-up each, no second dial."""
    twilio = menu_stack.twilio
    caller, agent = call_in(menu_stack, GatherAnswer(digits="2"))
    hang_up(menu_stack, caller, agent)
    dials = [r for r in twilio.rest_requests if r.path.endswith("/Calls.json")]
    replays = [
        w
        for w in twilio.webhooks
        if w.params.get("CallSid") == caller.sid
        and any(path in w.url for path in ("/twilio/voice", "/twilio/language"))
    ]
    assert len(replays) == 2, replays  # the voice webhook and the menu's one answer
    for record in replays:
        response = twilio.post_webhook(record.url, record.params)
        assert response is not None and response.status_code == 200
        verbs = [type(v).__name__ for v in parse_twiml(response.text)]
        assert verbs == ["Say", "Hangup"], (record.url, response.text)
    deadline = time.monotonic() + 2.0  # a wrongly admitted call dials at once
    while time.monotonic() < deadline:
        assert [r for r in twilio.rest_requests if r.path.endswith("/Calls.json")] == dials
        time.sleep(0.1)
    assert menu_stack.bridge.metric("bridge_active_calls") == 0
