"""Which translation engines exist, what each can speak, and how one is chosen (``ENGINE``).

Every engine lives in its own module, imported only when selected, so a deployment never loads
(or needs the dependencies of) a vendor it does not use. A module named here provides:

* ``config_from_env(env: Mapping[str, str]) -> <its config>``: reads and checks that engine's
  own settings (keys, base URLs, model, voice). A missing key or bad value raises
  :class:`bridge.settings.ConfigError` with one line naming the variable, so start-up stops
  before any worker runs. The result is kept as ``Settings.engine_config``.
* ``build(settings: Settings, metrics: Metrics) -> Engine``: the engine for this process
  (``settings.engine_config`` is what ``config_from_env`` returned).

The seam itself (sessions, listeners, lifecycle) is :mod:`bridge.engines.contract`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.engines.contract import Engine
    from bridge.ops.metrics import Metrics
    from bridge.settings.env import Settings

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
class EngineEntry:
    name: str
    module: str
    summary: str
    # The languages the engine can speak to a listener; None: any language of languages.json.
    output_languages: frozenset[str] | None


ENGINES: dict[str, EngineEntry] = {
    e.name: e
    for e in (
        EngineEntry(
            "openai",
            "bridge.engines.openai.translate_engine",
            "OpenAI realtime translation (gpt-realtime-translate)",
            OPENAI_TRANSLATE_LANGUAGES,
        ),
        EngineEntry(
            "openai-realtime",
            "bridge.engines.openai.voice_engine",
            "OpenAI realtime voice model (gpt-realtime) prompted as a strict interpreter",
            None,
        ),
        EngineEntry(
            "auto",
            "bridge.engines.auto",
            "per direction: openai where it speaks the listener's language, else openai-realtime",
            None,
        ),
        EngineEntry(
            "soniox",
            "bridge.engines.soniox.engine",
            "Soniox real-time translation (text), spoken by OpenAI's streaming speech API",
            SONIOX_LANGUAGES & OPENAI_TTS_LANGUAGES,
        ),
        EngineEntry(
            "bland",
            "bridge.engines.bland.engine",
            "Bland live translation (REST sessions, twilio_ulaw socket)",
            BLAND_LANGUAGES,
        ),
        EngineEntry(
            "gpt-translator",
            "bridge.engines.gpt_translator.engine",
            "GPT Translator's Realtime Translation API (Socket.IO)",
            # "130+ languages", any BCP-47 code as targetLanguage: every language we offer.
            None,
        ),
        EngineEntry(
            "relay",
            "bridge.engines.relay",
            "no translation: each party hears the other's own voice (wiring checks, demos)",
            None,
        ),
    )
}


def entry(name: str) -> EngineEntry:
    """The engine called ``name``; ``KeyError`` if there is none (settings check first)."""
    return ENGINES[name]


def config_from_env(name: str, env: Mapping[str, str]) -> Any:
    """The selected engine's own settings, checked (raises ``ConfigError``)."""
    module = importlib.import_module(ENGINES[name].module)
    return module.config_from_env(env)


def build(settings: Settings, metrics: Metrics) -> Engine:
    module = importlib.import_module(ENGINES[settings.engine].module)
    engine: Engine = module.build(settings, metrics)
    return engine
