"""``ENGINE=openai-realtime``: OpenAI's realtime voice model prompted as a strict interpreter.

For listeners whose language the translation model cannot speak. One
:class:`~bridge.engines.upstream.UpstreamSession` per direction (holding, replacement, rotation as
for ``ENGINE=openai``) whose links are :class:`~bridge.engines.openai.voice_link.RealtimeLink`\\ s:
instructions for the direction's language pair and the glossary's terms for it, server VAD, one
out-of-band response per turn and no conversation state kept.

Audio on the wire: G.711 μ-law at 8 kHz by default (``REALTIME_AUDIO_FORMAT=pcmu``): the
speaker's audio goes up as Twilio delivered it, at a third of the bytes of 24 kHz PCM16 (a sixth
in base64 JSON), and the translation comes back at the phone's rate, so neither direction is
resampled. ``pcm24`` sends 24 kHz PCM16 instead (resampled both ways, like ``ENGINE=openai``);
the README's engines table gives both measured.
"""

from __future__ import annotations

from functools import partial

from openai import OpenAI

from bridge.engines.contract import SessionListener, SessionSpec, TranslationSession
from bridge.engines.openai.config import RealtimeConfig
from bridge.engines.openai.interpreter import input_rate_hz, instructions
from bridge.engines.openai.voice_link import RealtimeLink
from bridge.engines.upstream import UpstreamSession
from bridge.ops.metrics import Metrics
from bridge.settings.env import Settings
from bridge.settings.glossary import load_glossary
from bridge.settings.languages import LanguageFileError, load_languages


def build(settings: Settings, metrics: Metrics) -> RealtimeEngine:
    config = settings.engine_config
    return RealtimeEngine(settings, metrics, config if isinstance(config, RealtimeConfig) else None)


class RealtimeEngine:
    name = "openai-realtime"

    def __init__(
        self, settings: Settings, metrics: Metrics, config: RealtimeConfig | None = None
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self.config = config or RealtimeConfig()
        self._client = OpenAI(api_key=settings.openai_api_key, base_url=settings.openai_base_url)
        self._glossary = load_glossary(settings.glossary_file)
        try:
            self._names = dict(load_languages(settings.languages_file)["en"].names)
        except (LanguageFileError, KeyError):  # names are a nicety: codes still work
            self._names = {}

    def instructions_for(self, spec: SessionSpec) -> str:
        """The interpreter's instructions for one direction of a call."""
        source = spec.input_language
        terms = self._glossary.terms(source, spec.output_language) if source else []
        return instructions(source, spec.output_language, terms, self._names)

    def session(self, spec: SessionSpec, listener: SessionListener) -> TranslationSession:
        config = self.config

        make_link = partial(
            RealtimeLink,
            self._client,
            model=config.model,
            voice=config.voice,
            audio_format=config.audio_format,
            instructions=self.instructions_for(spec),
            transcription_model=self._settings.transcription_model,
            spec=spec,
            listener=listener,
        )
        return UpstreamSession(
            self._metrics,
            spec=spec,
            listener=listener,
            make_link=make_link,
            input_rate_hz=input_rate_hz(config.audio_format),
            session_max_s=self._settings.session_max_s,
        )
