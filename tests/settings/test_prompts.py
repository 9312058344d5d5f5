"""Prompts and languages: every language has every prompt, spoken in its own voice; a file
that lacks what the configuration needs stops start-up with one line; ``twiml/`` matches what
the bridge answers.

Run ``python -m tests.settings.test_prompts`` to rewrite ``twiml/*.xml`` after changing a prompt or
a TwiML builder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from xml.dom import minidom

import pytest

from bridge.engines.registry import settings_from_env
from bridge.settings.env import OPENAI_OUTPUT_LANGUAGES, ConfigError, Settings
from bridge.settings.languages import load_languages
from bridge.settings.prompts import PROMPT_NAMES, TEMPLATE_FIELDS, load_prompts, prompt
from bridge.telephony.language_menu import LanguageMenu
from bridge.telephony.stream_token import StreamTokens
from bridge.telephony.twiml import connect_stream, say_and_hang_up
from tests.bridge_process import run_gunicorn_once

ROOT = Path(__file__).resolve().parents[2]
TWIML_DIR = ROOT / "twiml"
BASE = {
    "PUBLIC_BASE_URL": "https://bridge.example.com",
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": "token",
    "AGENT_NUMBER": "+15551230000",
    "OPENAI_API_KEY": "sk-test",
}
TABLE = load_languages()
CODES = TABLE.codes


def settings(**overrides: str) -> Settings:
    return settings_from_env({**BASE, **overrides}, env_file=None)


def prompts_file(tmp_path: Path, change: dict[str, dict[str, str | None]]) -> Path:
    """A copy of config/prompts.json with texts replaced (None: removed)."""
    document = json.loads((ROOT / "config" / "prompts.json").read_text(encoding="utf-8"))
    for code, texts in change.items():
        for name, text in texts.items():
            if text is None:
                del document["prompts"][code][name]
            else:
                document["prompts"][code][name] = text
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


# -- the shipped files -----------------------------------------------------------------------


def test_the_table_offers_every_language_the_model_speaks() -> None:
    assert set(CODES) >= OPENAI_OUTPUT_LANGUAGES
    # Dutch: a language only the realtime voice model speaks (ENGINE=openai-realtime or auto).
    assert set(CODES) - OPENAI_OUTPUT_LANGUAGES == {"nl"}
    assert load_prompts().complete_languages() == frozenset(CODES)
    # The ten likeliest languages have keys of their own, so any ten of them can be offered.
    ten = ("en", "es", "fr", "de", "it", "pt", "zh", "ja", "ko", "ru")
    assert sorted(TABLE[c].digit for c in ten) == sorted("0123456789")


@pytest.mark.parametrize("code", CODES)
def test_prompts_in_each_language(code: str) -> None:
    language = TABLE[code]
    engine = "openai" if code in OPENAI_OUTPUT_LANGUAGES else "auto"
    s = settings(CALLER_LANGUAGE=code, AGENT_LANGUAGE=code, ENGINE=engine)  # start-up accepts it
    assert (s.caller_language, s.agent_language) == (code, code)
    for name in PROMPT_NAMES:
        fields = {"caller_language": "X", "digit": "7", "name": "N"}
        said = prompt(name, code, **{f: fields[f] for f in TEMPLATE_FIELDS.get(name, ())})
        # Spoken with the language's own voice, never an empty or half-filled text.
        assert (said.say_language, said.voice) == (language.say_language, language.voice)
        assert said.text.strip() and "{" not in said.text and "}" not in said.text
    option = prompt("menu_option", code, digit=language.digit, name=language.name).text
    assert language.digit in option
    for other in CODES:  # the whisper can name every caller language in this one
        named = language.name_of(other)
        assert named in prompt("agent_whisper", code, caller_language=named).text


def test_voices_match_their_languages() -> None:
    for code in CODES:
        language = TABLE[code]
        assert language.voice.startswith(("Polly.", "Google.")), code
        if language.voice.startswith("Google."):
            assert language.voice.split(".", 1)[1].startswith(language.say_language), code
        assert language.say_language.split("-")[0] in (code, "cmn"), code


def test_the_whisper_reads_naturally() -> None:
    spanish_in = {code: TABLE[code].name_of("es") for code in CODES}
    assert spanish_in["en"] == "Spanish" and spanish_in["de"] == "Spanisch"
    assert prompt("agent_whisper", "en", caller_language="Spanish").text == (
        "Interpreted call. The caller speaks Spanish."
    )
    assert prompt("agent_whisper", "es", caller_language=TABLE["es"].name_of("en")).text == (
        "Llamada con interpretación. La persona que llama habla inglés."
    )


# -- files that do not fit the configuration --------------------------------------------------


def test_a_configured_language_lacking_a_prompt_stops_start_up(tmp_path: Path) -> None:
    path = prompts_file(tmp_path, {"fr": {"menu_goodbye": None}})
    # Nobody speaks French on this line yet: the gap does not matter.
    assert settings(PROMPTS_FILE=str(path)).caller_languages == ("es",)
    with pytest.raises(ConfigError) as info:
        settings(PROMPTS_FILE=str(path), CALLER_LANGUAGES="es,fr")
    assert str(info.value) == f"CALLER_LANGUAGES: 'fr' has no menu_goodbye in {path}"
    for variable in ("CALLER_LANGUAGE", "AGENT_LANGUAGE"):
        with pytest.raises(ConfigError, match=f"^{variable}: 'fr' has no menu_goodbye"):
            settings(PROMPTS_FILE=str(path), **{variable: "fr"})
    with pytest.raises(ConfigError, match=r"^AGENT_LANGUAGES: 'fr' has no menu_goodbye"):
        settings(PROMPTS_FILE=str(path), AGENT_LANGUAGES="+15551230000=fr")


def test_the_consent_notice_is_needed_only_while_it_is_on(tmp_path: Path) -> None:
    path = prompts_file(tmp_path, {"fr": {"consent_notice": None}, "de": {"consent_notice": " "}})
    # Off (the default): a prompts file without the notice starts as before.
    assert settings(PROMPTS_FILE=str(path), CALLER_LANGUAGES="es,fr").consent_notice is False
    # On, and every language spoken has it: accepted.
    assert settings(CONSENT_NOTICE="on", CALLER_LANGUAGES="es,fr").consent_notice is True
    ok = settings(PROMPTS_FILE=str(path), CONSENT_NOTICE="on", CALLER_LANGUAGES="es,en")
    assert ok.consent_notice is True


@pytest.mark.parametrize(
    ("overrides", "lacking"),
    [
        ({"CALLER_LANGUAGES": "es,fr"}, "'fr' has"),
        ({"CALLER_LANGUAGE": "fr"}, "'fr' has"),
        ({"AGENT_LANGUAGE": "de"}, "'de' has"),  # blank counts as missing
        ({"AGENT_LANGUAGES": "+15551230000=de"}, "'de' has"),
        ({"CALLER_LANGUAGES": "fr,es,de", "AGENT_LANGUAGES": "+15551239999=fr"}, "'fr', 'de' have"),
    ],
)
def test_consent_notice_on_refuses_each_language_lacking_it_in_one_line(
    tmp_path: Path, overrides: dict[str, str], lacking: str
) -> None:
    path = prompts_file(tmp_path, {"fr": {"consent_notice": None}, "de": {"consent_notice": " "}})
    with pytest.raises(ConfigError) as info:
        settings(PROMPTS_FILE=str(path), CONSENT_NOTICE="on", **overrides)
    assert str(info.value) == f"CONSENT_NOTICE: on, but {lacking} no consent_notice in {path}"


def test_a_bad_consent_notice_value_is_named_with_the_other_problems(tmp_path: Path) -> None:
    path = prompts_file(tmp_path, {"fr": {"menu_goodbye": None}})
    with pytest.raises(ConfigError) as info:
        settings(PROMPTS_FILE=str(path), CONSENT_NOTICE="maybe", CALLER_LANGUAGES="es,fr")
    assert str(info.value) == (
        f"CONSENT_NOTICE: 'maybe' is not on or off; "
        f"CALLER_LANGUAGES: 'fr' has no menu_goodbye in {path}"
    )


def test_gunicorn_refuses_a_missing_consent_notice_with_one_line(tmp_path: Path) -> None:
    path = prompts_file(tmp_path, {"fr": {"consent_notice": None}})
    env = {
        "PATH": str(Path(sys.executable).parent),
        "HOME": "/tmp",
        **BASE,
        "CALLER_LANGUAGES": "es,fr",
        "CONSENT_NOTICE": "on",
        "PROMPTS_FILE": str(path),
    }
    proc = run_gunicorn_once(env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"configuration error: CONSENT_NOTICE: on, but 'fr' has no consent_notice in {path}"
    )


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"en": {"agent_whisper": "Interpreted call."}}, "lacks placeholders ['caller_language']"),
        ({"de": {"connecting": "Bitte warten, {name}."}}, "has unknown placeholders ['name']"),
        ({"es": {"menu_option": "Para {name, marque"}}, "unbalanced braces"),
        ({"it": {"greeting": "Ciao"}}, "unknown prompts greeting"),
    ],
)
def test_a_malformed_prompts_file_names_itself(
    tmp_path: Path, change: dict[str, dict[str, str | None]], words: str
) -> None:
    path = prompts_file(tmp_path, change)
    with pytest.raises(ConfigError) as info:
        settings(PROMPTS_FILE=str(path))
    assert str(info.value).startswith(f"PROMPTS_FILE: {path}: ")
    assert words in str(info.value)


def test_unreadable_files_name_their_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^PROMPTS_FILE: .* cannot be read"):
        settings(PROMPTS_FILE=str(tmp_path / "nope.json"))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match=r"^LANGUAGES_FILE: .* not valid JSON"):
        settings(LANGUAGES_FILE=str(tmp_path / "broken.json"))


def test_gunicorn_refuses_a_missing_prompt_with_one_line(tmp_path: Path) -> None:
    path = prompts_file(tmp_path, {"fr": {"connecting": None, "time_limit": None}})
    env = {
        "PATH": str(Path(sys.executable).parent),
        "HOME": "/tmp",
        **BASE,
        "CALLER_LANGUAGES": "es,fr",
        "PROMPTS_FILE": str(path),
    }
    proc = run_gunicorn_once(env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"configuration error: CALLER_LANGUAGES: 'fr' has no connecting, time_limit in {path}"
    )


# -- twiml/: the documents the bridge answers with, for a sample configuration -------------------


def reference_documents() -> dict[str, str]:
    """What the bridge answers Twilio with, for ``twiml/README.md``'s sample configuration."""
    s = settings(CALLER_LANGUAGES="es,en,fr", ENGINE="relay")
    call_sid = "CA" + "0" * 32
    menu = LanguageMenu(s.caller_languages, load_prompts(), s.public_url("/twilio/language"))
    stream = s.stream_url("/media")
    whisper = prompt("agent_whisper", "en", caller_language=TABLE["en"].name_of("es"))
    # A real token for the sample's auth token, issued at a fixed moment (2027-01-15 08:00 UTC)
    # with the default expiries, so the documents do not change from one run to the next.
    tokens, issued_at = StreamTokens(BASE["TWILIO_AUTH_TOKEN"]), 1_800_000_000.0
    caller_token = tokens.issue(call_sid, "caller", issued_at, 120)
    agent_token = tokens.issue(call_sid, "agent", issued_at, 30 + 120)
    return {
        "language-menu.xml": menu.offer(1),
        "language-menu-retry.xml": menu.offer(2),
        "language-menu-goodbye.xml": menu.give_up(),
        "caller-connect.xml": connect_stream(
            stream, call_sid, "caller", caller_token, [prompt("connecting", "es")]
        ),
        "agent-connect.xml": connect_stream(stream, call_sid, "agent", agent_token, [whisper]),
        # CONSENT_NOTICE=on: the notice follows the greeting, and the whisper, in each language.
        "caller-connect-consent.xml": connect_stream(
            stream,
            call_sid,
            "caller",
            caller_token,
            [prompt("connecting", "es"), prompt("consent_notice", "es")],
        ),
        "agent-connect-consent.xml": connect_stream(
            stream, call_sid, "agent", agent_token, [whisper, prompt("consent_notice", "en")]
        ),
        "notice-and-hang-up.xml": say_and_hang_up(prompt("agent_unavailable", "es")),
    }


def pretty(document: str) -> str:
    return (
        minidom.parseString(document.encode()).toprettyxml(indent="  ", encoding="UTF-8").decode()
    )


@pytest.mark.parametrize("name", sorted(reference_documents()))
def test_twiml_reference_documents_are_current(name: str) -> None:
    path = TWIML_DIR / name
    assert path.is_file(), f"{path} is missing: run python -m tests.settings.test_prompts"
    assert path.read_text(encoding="utf-8") == pretty(reference_documents()[name]), (
        f"{path} is stale: run python -m tests.settings.test_prompts"
    )


def test_twiml_holds_nothing_stale() -> None:
    expected = {*reference_documents(), "README.md"}
    assert {p.name for p in TWIML_DIR.iterdir()} == expected


if __name__ == "__main__":
    for file_name, text in reference_documents().items():
        (TWIML_DIR / file_name).write_text(pretty(text), encoding="utf-8")
        print(f"wrote twiml/{file_name}")
