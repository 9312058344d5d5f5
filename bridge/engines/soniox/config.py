"""``ENGINE=soniox``'s own settings: read and checked at start-up, with no vendor code loaded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bridge.engines.soniox.wire import DEFAULT_MODEL, DEFAULT_WS_URL
from bridge.engines.speech import soniox_tts_wire
from bridge.settings.env import ConfigError
from bridge.settings.glossary import DEFAULT_GLOSSARY_FILE

# SONIOX_TTS: who speaks the translation, and that speaker's default model and voice.
TTS_DEFAULTS = {
    "openai": ("gpt-4o-mini-tts", "alloy"),
    "soniox": (soniox_tts_wire.DEFAULT_TTS_MODEL, soniox_tts_wire.DEFAULT_TTS_VOICE),
}


@dataclass(frozen=True, slots=True)
class SonioxConfig:
    api_key: str = field(repr=False)
    ws_url: str
    model: str
    tts: str  # "openai" or "soniox"
    tts_api_key: str = field(repr=False)  # OpenAI's key, or Soniox's
    tts_model: str
    tts_voice: str
    tts_ws_url: str
    glossary_file: Path


def config_from_env(env: Mapping[str, str]) -> SonioxConfig:
    def get(name: str) -> str:
        return env.get(name, "").strip()

    if not get("SONIOX_API_KEY"):
        raise ConfigError("SONIOX_API_KEY: required with ENGINE=soniox")
    tts = (get("SONIOX_TTS") or "openai").lower()
    if tts not in TTS_DEFAULTS:
        raise ConfigError(f"SONIOX_TTS: {tts!r} is not openai or soniox")
    if tts == "openai" and not get("OPENAI_API_KEY"):
        raise ConfigError(
            "OPENAI_API_KEY: required with ENGINE=soniox (OpenAI speaks the translation;"
            " or set SONIOX_TTS=soniox)"
        )
    ws_urls = {
        "SONIOX_WS_URL": DEFAULT_WS_URL,
        "SONIOX_TTS_WS_URL": soniox_tts_wire.DEFAULT_TTS_WS_URL,
    }
    for name, default in ws_urls.items():
        ws_urls[name] = get(name) or default
        if not ws_urls[name].startswith(("wss://", "ws://")):
            raise ConfigError(f"{name}: {ws_urls[name]!r} is not a ws:// or wss:// URL")
    glossary = Path(get("GLOSSARY_FILE") or DEFAULT_GLOSSARY_FILE)
    model, voice = TTS_DEFAULTS[tts]
    return SonioxConfig(
        api_key=get("SONIOX_API_KEY"),
        ws_url=ws_urls["SONIOX_WS_URL"],
        model=get("SONIOX_MODEL") or DEFAULT_MODEL,
        tts=tts,
        tts_api_key=get("OPENAI_API_KEY") if tts == "openai" else get("SONIOX_API_KEY"),
        tts_model=get("TTS_MODEL") or model,
        tts_voice=get("TTS_VOICE") or voice,
        tts_ws_url=ws_urls["SONIOX_TTS_WS_URL"],
        glossary_file=glossary,
    )
