"""Which translation engines can be chosen (``ENGINE``), and which languages each can speak.

Pure data, so that settings can check ``ENGINE`` and every language against it without loading
any engine; :mod:`bridge.engines.registry` maps the same names to their code.
"""

from __future__ import annotations

from dataclasses import dataclass

# Bland's Live Translation API speaks (and hears) these (Create Translation Session docs).
BLAND_LANGUAGES = frozenset(
    [
        "en",
        "es",
        "fr",
        "de",
        "it",
        "pt",
        "nl",
        "pl",
        "sv",
        "fi",
        "da",
        "cs",
        "el",
        "ro",
        "ru",
        "tr",
        "ar",
        "hi",
        "id",
        "tl",
        "zh",
        "ja",
        "ko",
    ]
)
# gpt-realtime-translate outputs speech in these languages only (OpenAI's translation guide).
OPENAI_TRANSLATE_LANGUAGES = frozenset(
    {"es", "pt", "fr", "ja", "ru", "zh", "de", "ko", "hi", "id", "vi", "it", "en"}
)

# Soniox translates between any two of its 60 languages (its supported-languages page)...
_SONIOX = "af sq ar az eu be bn bs bg ca zh hr cs da nl en et fi fr gl de el gu he hi hu id it ja"
_SONIOX += (
    " kn kk ko lv lt mk ms ml mr no fa pl pt pa ro ru sr sk sl es sw sv tl ta te th tr uk ur vi cy"
)
SONIOX_LANGUAGES = frozenset(_SONIOX.split())
# ...and OpenAI's speech models speak Whisper's well-supported languages (OpenAI's TTS guide).
_WHISPER = "af ar hy az be bs bg ca zh hr cs da nl en et fi fr gl de el he hi hu is id it ja kn kk"
_WHISPER += " ko lv lt mk ms mr mi ne no fa pl pt ro ru sr sk sl es sw sv tl ta th tr uk ur vi cy"
OPENAI_TTS_LANGUAGES = frozenset(_WHISPER.split())


@dataclass(frozen=True, slots=True)
class EngineChoice:
    name: str
    summary: str
    # The languages the engine can speak to a listener; None: any language of languages.json.
    output_languages: frozenset[str] | None


ENGINES: dict[str, EngineChoice] = {
    e.name: e
    for e in (
        EngineChoice(
            "openai",
            "OpenAI realtime translation (gpt-realtime-translate)",
            OPENAI_TRANSLATE_LANGUAGES,
        ),
        EngineChoice(
            "openai-realtime",
            "OpenAI realtime voice model (gpt-realtime) prompted as a strict interpreter",
            None,
        ),
        EngineChoice(
            "auto",
            "per direction: openai where it speaks the listener's language, else openai-realtime",
            None,
        ),
        EngineChoice(
            "soniox",
            "Soniox real-time translation (text), spoken by OpenAI's streaming speech API",
            SONIOX_LANGUAGES & OPENAI_TTS_LANGUAGES,
        ),
        EngineChoice(
            "bland",
            "Bland live translation (REST sessions, twilio_ulaw socket)",
            BLAND_LANGUAGES,
        ),
        EngineChoice(
            "gpt-translator",
            "GPT Translator's Realtime Translation API (Socket.IO)",
            # "130+ languages", any BCP-47 code as targetLanguage: every language we offer.
            None,
        ),
        EngineChoice(
            "relay",
            "no translation: each party hears the other's own voice (wiring checks, demos)",
            None,
        ),
    )
}


def choice(name: str) -> EngineChoice:
    """The engine called ``name``; ``KeyError`` if there is none (settings check first)."""
    return ENGINES[name]
