"""The OpenAI engines' own settings (``openai``, ``openai-realtime``, ``auto``): read and checked
at start-up without loading the SDK (the gunicorn master reads them before it forks)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from bridge.settings.env import ConfigError

AudioFormat = Literal["pcm24", "pcmu"]
AUDIO_FORMATS: tuple[AudioFormat, ...] = ("pcm24", "pcmu")


def require_openai_key(env: Mapping[str, str], engine: str) -> None:
    """Stop start-up with one line when the OpenAI key is missing."""
    if not env.get("OPENAI_API_KEY", "").strip():
        raise ConfigError(f"OPENAI_API_KEY: required with ENGINE={engine} (or set ENGINE=relay)")


def translate_config_from_env(env: Mapping[str, str]) -> None:
    """``ENGINE=openai``: the OpenAI settings live in :class:`Settings` (other engines share
    them); only the key is required here."""
    require_openai_key(env, "openai")


DEFAULT_MODEL = "gpt-realtime"
DEFAULT_VOICE = "marin"
DEFAULT_AUDIO_FORMAT: AudioFormat = "pcmu"
# The built-in voices the SDK names in ``openai.types.realtime...Voice`` (a custom voice is
# {"id": ...}, not offered here). Written out so reading settings never imports the SDK; a test
# holds this list against the installed SDK's.
VOICES: tuple[str, ...] = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)


@dataclass(frozen=True, slots=True)
class RealtimeConfig:
    model: str = DEFAULT_MODEL
    voice: str = DEFAULT_VOICE
    audio_format: AudioFormat = DEFAULT_AUDIO_FORMAT


def realtime_config(env: Mapping[str, str]) -> RealtimeConfig:
    """REALTIME_MODEL, REALTIME_VOICE and REALTIME_AUDIO_FORMAT, checked."""
    model = env.get("REALTIME_MODEL", "").strip() or DEFAULT_MODEL
    voice = (env.get("REALTIME_VOICE", "").strip() or DEFAULT_VOICE).lower()
    if voice not in VOICES:
        raise ConfigError(f"REALTIME_VOICE: {voice!r} is not one of {', '.join(VOICES)}")
    raw_format = (env.get("REALTIME_AUDIO_FORMAT", "").strip() or DEFAULT_AUDIO_FORMAT).lower()
    for audio_format in AUDIO_FORMATS:
        if raw_format == audio_format:
            return RealtimeConfig(model, voice, audio_format)
    raise ConfigError(
        f"REALTIME_AUDIO_FORMAT: {raw_format!r} is not one of {', '.join(AUDIO_FORMATS)}"
    )


def realtime_config_from_env(env: Mapping[str, str]) -> RealtimeConfig:
    """``ENGINE=openai-realtime``."""
    require_openai_key(env, "openai-realtime")
    return realtime_config(env)


def auto_config_from_env(env: Mapping[str, str]) -> RealtimeConfig:
    """``ENGINE=auto``: the realtime model's settings, for the directions that need it."""
    require_openai_key(env, "auto")
    return realtime_config(env)
