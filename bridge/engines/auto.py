"""``ENGINE=auto``: per direction, the translation model where it can speak the listener's
language, otherwise the realtime voice model prompted as an interpreter.

The translation model (``ENGINE=openai``) is preferred where it can serve: continuous
simultaneous translation, no turns to wait for, the speaker's own voice. The realtime model
(``ENGINE=openai-realtime``) covers every other language. One call may use both: e.g. a Dutch
caller and an English agent get realtime for agent→caller (Dutch out) and translation for
caller→agent (English out).
"""

from __future__ import annotations

from bridge.engines.contract import SessionListener, SessionSpec, TranslationSession
from bridge.engines.openai.config import RealtimeConfig
from bridge.engines.openai.translate_engine import OpenAIEngine
from bridge.engines.openai.voice_engine import RealtimeEngine
from bridge.ops.metrics import Metrics
from bridge.settings.engine_choice import OPENAI_TRANSLATE_LANGUAGES
from bridge.settings.env import Settings


def build(settings: Settings, metrics: Metrics) -> AutoEngine:
    return AutoEngine(settings, metrics)


def uses_translation(output_language: str) -> bool:
    """Whether a direction speaking ``output_language`` goes to the translation model."""
    return output_language.split("-", 1)[0].lower() in OPENAI_TRANSLATE_LANGUAGES


class AutoEngine:
    name = "auto"

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        config = settings.engine_config
        self.translation = OpenAIEngine(settings, metrics)
        self.realtime = RealtimeEngine(
            settings, metrics, config if isinstance(config, RealtimeConfig) else None
        )

    def session(self, spec: SessionSpec, listener: SessionListener) -> TranslationSession:
        if uses_translation(spec.output_language):
            return self.translation.session(spec, listener)
        return self.realtime.session(spec, listener)
