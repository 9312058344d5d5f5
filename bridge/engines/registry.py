"""How each translation engine (``ENGINE``) is configured and built.

Every engine lives in its own module, imported only when selected, so a deployment never loads
(or needs the dependencies of) a vendor it does not use. For each name of
:mod:`bridge.settings.engine_choice` there is:

* a ``config_from_env(env) -> <its config>`` function in that vendor's pure ``config`` module:
  it reads and checks the engine's own settings (keys, base URLs, model, voice) without loading
  any vendor SDK (the gunicorn master runs it before forking). A missing key or bad value raises
  :class:`bridge.settings.env.ConfigError` with one line naming the variable. The result is kept
  as ``Settings.engine_config`` by :func:`settings_from_env`;
* a module with ``build(settings: Settings, metrics: Metrics) -> Engine``: the engine for this
  process.

The seam itself (sessions, listeners, lifecycle) is :mod:`bridge.engines.contract`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.engines.bland.config import config_from_env as bland_config
from bridge.engines.gpt_translator.config import config_from_env as gpt_translator_config
from bridge.engines.openai.config import (
    auto_config_from_env,
    realtime_config_from_env,
    translate_config_from_env,
)
from bridge.engines.soniox.config import config_from_env as soniox_config
from bridge.settings.engine_choice import ENGINES
from bridge.settings.env import Settings

if TYPE_CHECKING:
    from bridge.engines.contract import Engine
    from bridge.ops.metrics import Metrics


def _no_config(env: Mapping[str, str]) -> None:
    """Nothing to configure: no keys, no vendor (``ENGINE=relay``)."""


CONFIGS: dict[str, Callable[[Mapping[str, str]], Any]] = {
    "openai": translate_config_from_env,
    "openai-realtime": realtime_config_from_env,
    "auto": auto_config_from_env,
    "soniox": soniox_config,
    "bland": bland_config,
    "gpt-translator": gpt_translator_config,
    "relay": _no_config,
}
MODULES: dict[str, str] = {
    "openai": "bridge.engines.openai.translate_engine",
    "openai-realtime": "bridge.engines.openai.voice_engine",
    "auto": "bridge.engines.auto",
    "soniox": "bridge.engines.soniox.engine",
    "bland": "bridge.engines.bland.engine",
    "gpt-translator": "bridge.engines.gpt_translator.engine",
    "relay": "bridge.engines.relay",
}
assert CONFIGS.keys() == MODULES.keys() == ENGINES.keys(), "an engine is missing a part"


def config_from_env(name: str, env: Mapping[str, str]) -> Any:
    """The engine ``name``'s own settings, checked (raises ``ConfigError``)."""
    return CONFIGS[name](env)


def settings_from_env(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
) -> Settings:
    """:meth:`Settings.from_env` with the selected engine's own settings read and checked
    too (every problem, the engine's included, named in one line)."""
    return Settings.from_env(environ, env_file, engine_config=config_from_env)


def build(settings: Settings, metrics: Metrics) -> Engine:
    module = importlib.import_module(MODULES[settings.engine])
    engine: Engine = module.build(settings, metrics)
    return engine
