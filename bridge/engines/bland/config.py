"""``ENGINE=bland``'s own settings: read and checked at start-up, with no vendor code loaded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bridge.settings import values as val
from bridge.settings.values import ConfigError

DEFAULT_BASE_URL = "https://api.bland.ai"
DEFAULT_MAX_SESSIONS = 3  # Bland's documented per-organization cap


@dataclass(frozen=True, slots=True)
class BlandConfig:
    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    voice_id: str | None = None
    max_sessions: int = DEFAULT_MAX_SESSIONS


def config_from_env(env: Mapping[str, str]) -> BlandConfig:
    key = val.get(env, "BLAND_API_KEY")
    if key is None:
        raise ConfigError("BLAND_API_KEY: required with ENGINE=bland (or set ENGINE=relay)")
    base = val.base_url(
        "BLAND_BASE_URL", val.get(env, "BLAND_BASE_URL") or DEFAULT_BASE_URL, origin_only=True
    )
    return BlandConfig(
        api_key=key,
        base_url=base,
        voice_id=val.get(env, "BLAND_VOICE_ID"),
        max_sessions=val.whole_number(env, "BLAND_MAX_SESSIONS", DEFAULT_MAX_SESSIONS, 1, 1000),
    )
