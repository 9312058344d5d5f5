"""``ENGINE=gpt-translator``'s own settings: read and checked at start-up, no vendor code loaded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bridge.engines.gpt_translator import wire
from bridge.settings.env import ConfigError

API_KEY_VAR = "GPT_TRANSLATOR_API_KEY"
URL_VAR = "GPT_TRANSLATOR_URL"


@dataclass(frozen=True, slots=True)
class GptTranslatorConfig:
    api_key: str = field(repr=False)
    endpoint: wire.Endpoint


def config_from_env(env: Mapping[str, str]) -> GptTranslatorConfig:
    key = env.get(API_KEY_VAR, "").strip()
    if not key:
        raise ConfigError(
            f"{API_KEY_VAR}: required with ENGINE=gpt-translator "
            "(an API key from the GPT Translator dashboard)"
        )
    url = env.get(URL_VAR, "").strip() or wire.DEFAULT_URL
    try:
        endpoint = wire.parse_endpoint(url)
    except ValueError as exc:
        # Not echoed: a query string here may well be someone's key.
        raise ConfigError(f"{URL_VAR}: {exc} (like {wire.DEFAULT_URL})") from None
    return GptTranslatorConfig(key, endpoint)
