"""``ENGINE=openai``: OpenAI realtime translation (``gpt-realtime-translate``) via the official SDK.

One :class:`~bridge.engines.upstream.UpstreamSession` per direction of a call, whose links are
:class:`~bridge.engines.openai.translate_link.TranslationLink`\\ s: the speaker's audio goes up as
24 kHz PCM16 (the only format the endpoint takes), translated 24 kHz PCM16 comes back and the
listener's leg resamples it to 8 kHz.

Why the SDK's sync client: typed events and reconnection with backoff; its threads fit the
thread-per-socket model of flask-sock under gunicorn.
"""

from __future__ import annotations

from functools import partial

from openai import OpenAI

from bridge.audio.pcm import ENGINE_RATE_HZ
from bridge.engines.contract import SessionListener, SessionSpec, TranslationSession
from bridge.engines.openai.translate_link import TranslationLink
from bridge.engines.upstream import UpstreamSession
from bridge.ops.metrics import Metrics
from bridge.settings.env import Settings


def build(settings: Settings, metrics: Metrics) -> OpenAIEngine:
    return OpenAIEngine(settings, metrics)


class OpenAIEngine:
    name = "openai"

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._client = OpenAI(api_key=settings.openai_api_key, base_url=settings.openai_base_url)

    def session(self, spec: SessionSpec, listener: SessionListener) -> TranslationSession:
        make_link = partial(
            TranslationLink,
            self._client,
            model=self._settings.translation_model,
            transcription_model=self._settings.transcription_model,
            spec=spec,
            listener=listener,
        )
        return UpstreamSession(
            self._metrics,
            spec=spec,
            listener=listener,
            make_link=make_link,
            input_rate_hz=ENGINE_RATE_HZ,
            session_max_s=self._settings.session_max_s,
        )
