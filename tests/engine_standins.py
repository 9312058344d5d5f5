"""The stand-in of every engine, as the shared suite (tests/engines/test_engines.py) drives it.

One entry per engine of bridge/engines/registry.py (``relay`` needs none). Each vendor's stand-in
lives in tests/fakes/ and speaks that vendor's documented wire protocol; the harness here adapts it
to :class:`tests.engine_harness.EngineHarness`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

from tests.bridge_process import OPENAI_KEY
from tests.engine_harness import ConfigFault, EngineHarness, StandInSession
from tests.fakes.audio import ENGINE_RATE_HZ
from tests.fakes.bland import FakeBland
from tests.fakes.gpt_translator import FakeGptTranslator
from tests.fakes.openai_realtime import FakeRealtimeServer, RealtimeSession
from tests.fakes.openai_session import FakeSession
from tests.fakes.openai_speech import FakeSpeechServer
from tests.fakes.openai_translate import FakeTranslationServer
from tests.fakes.soniox import FakeSoniox
from tests.fakes.soniox_tts import FakeSonioxTts

SONIOX_KEY = "soniox-test-key-5b1e"


@contextmanager
def _swapped(stand_in: object, attribute: str, value: object) -> Iterator[None]:
    """A stand-in's setting changed while entered (a wrong key: new sessions are refused the
    vendor's way), then put back as it was."""
    before = getattr(stand_in, attribute)
    setattr(stand_in, attribute, value)
    try:
        yield
    finally:
        setattr(stand_in, attribute, before)


class _OpenAITranslateSession:
    def __init__(self, session: FakeSession) -> None:
        self._session = session

    @property
    def received_ms(self) -> float:
        return 1000.0 * len(self._session.audio_snapshot()) / 2 / ENGINE_RATE_HZ

    @property
    def ended_cleanly(self) -> bool:
        return self._session.closed_by_client


class OpenAITranslateHarness:
    """``ENGINE=openai`` against :class:`FakeTranslationServer`."""

    name = "openai"

    def __init__(self, server: FakeTranslationServer) -> None:
        self.server = server

    def env(self) -> Mapping[str, str]:
        return {
            "ENGINE": "openai",
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": self.server.base_url,
        }

    def sessions(self) -> list[StandInSession]:
        return [_OpenAITranslateSession(s) for s in self.server.sessions]

    def drop_all(self) -> None:
        self.server.drop_all(None)

    def output_sent_at(self) -> list[float]:
        return sorted(t for s in self.server.sessions for _, t in s.sent_deltas)

    def refusing(self) -> AbstractContextManager[None]:
        return _swapped(self.server, "api_key", "sk-another-key")

    def failing_config(self, fault: ConfigFault) -> AbstractContextManager[None]:
        return _swapped(self.server, "config_fault", fault)

    def malformed(self) -> AbstractContextManager[None]:
        return _swapped(self.server, "malformed", True)


@contextmanager
def openai_translate() -> Iterator[EngineHarness]:
    with FakeTranslationServer() as server:
        yield OpenAITranslateHarness(server)


class _RealtimeSession:
    def __init__(self, session: RealtimeSession) -> None:
        self._session = session

    @property
    def received_ms(self) -> float:
        rate = self._session.input_rate_hz
        return 1000.0 * len(self._session.audio_snapshot()) / 2 / rate

    @property
    def ended_cleanly(self) -> bool:
        # No session.close in this protocol: the client closes the socket normally (1000).
        return self._session.ended_cleanly


class OpenAIRealtimeHarness(OpenAITranslateHarness):
    """``ENGINE=openai-realtime`` (or ``auto``, which also uses the translation endpoint)
    against :class:`FakeRealtimeServer`, which serves both endpoints on one port."""

    def __init__(self, server: FakeRealtimeServer, name: str, **env: str) -> None:
        super().__init__(server)
        self.server: FakeRealtimeServer = server
        self.name = name
        self._env = env

    def env(self) -> Mapping[str, str]:
        return {**super().env(), "ENGINE": self.name, **self._env}

    def sessions(self) -> list[StandInSession]:
        both: list[tuple[float, StandInSession]] = [
            (s.connected_at, _OpenAITranslateSession(s)) for s in self.server.sessions
        ]
        both.extend((s.connected_at, _RealtimeSession(s)) for s in self.server.realtime_sessions)
        return [session for _, session in sorted(both, key=lambda pair: pair[0])]

    def output_sent_at(self) -> list[float]:
        realtime = [t for s in self.server.realtime_sessions for _, t in s.sent_deltas]
        return sorted([*super().output_sent_at(), *realtime])


@contextmanager
def openai_realtime() -> Iterator[EngineHarness]:
    server = FakeRealtimeServer()
    with server:
        yield OpenAIRealtimeHarness(server, "openai-realtime")


@contextmanager
def openai_auto() -> Iterator[EngineHarness]:
    server = FakeRealtimeServer()
    with server:
        yield OpenAIRealtimeHarness(server, "auto")


class SonioxHarness:
    """``ENGINE=soniox`` against :class:`FakeSoniox` (text) and :class:`FakeSpeechServer`
    (OpenAI's speech endpoint, speaking the translation)."""

    name = "soniox"

    def __init__(
        self, soniox: FakeSoniox, speech: FakeSpeechServer | None, tts: FakeSonioxTts | None
    ) -> None:
        self.soniox = soniox
        self._speech = speech
        self._tts = tts

    @property
    def speech(self) -> FakeSpeechServer:
        assert self._speech is not None, "this harness speaks with Soniox's TTS"
        return self._speech

    @property
    def tts(self) -> FakeSonioxTts:
        assert self._tts is not None, "this harness speaks with OpenAI"
        return self._tts

    def env(self) -> Mapping[str, str]:
        env = {"ENGINE": "soniox", "SONIOX_API_KEY": SONIOX_KEY, "SONIOX_WS_URL": self.soniox.url}
        if self._tts is not None:
            return {**env, "SONIOX_TTS": "soniox", "SONIOX_TTS_WS_URL": self._tts.url}
        return {**env, "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": self.speech.base_url}

    def sessions(self) -> list[StandInSession]:
        # Requests refused before their start request was accepted never began a session.
        return [r for r in self.soniox.snapshot() if r.start is not None]

    def drop_all(self) -> None:
        self.soniox.drop_all()

    def refusing(self) -> AbstractContextManager[None]:
        return _swapped(self.soniox, "api_key", "another-soniox-key")

    def failing_config(self, fault: ConfigFault) -> AbstractContextManager[None]:
        return _swapped(self.soniox, "config_fault", fault)

    def malformed(self) -> AbstractContextManager[None]:
        return _swapped(self.soniox, "malformed", True)


@contextmanager
def soniox() -> Iterator[EngineHarness]:
    with (
        FakeSoniox(api_key=SONIOX_KEY) as text,
        FakeSpeechServer(api_key=OPENAI_KEY) as speech,
    ):
        yield SonioxHarness(text, speech, None)


@contextmanager
def soniox_tts() -> Iterator[EngineHarness]:
    """``ENGINE=soniox`` with ``SONIOX_TTS=soniox``: Soniox both translates and speaks."""
    with FakeSoniox(api_key=SONIOX_KEY) as text, FakeSonioxTts(api_key=SONIOX_KEY) as tts:
        yield SonioxHarness(text, None, tts)


BLAND_KEY = "bland-test-key-0123456789"


class BlandHarness:
    """``ENGINE=bland`` against :class:`FakeBland` (sessions are ended cleanly by DELETE)."""

    name = "bland"

    def __init__(self, server: FakeBland) -> None:
        self.server = server

    def env(self) -> Mapping[str, str]:
        return {
            "ENGINE": "bland",
            "BLAND_API_KEY": BLAND_KEY,
            "BLAND_BASE_URL": self.server.base_url,
        }

    def sessions(self) -> list[StandInSession]:
        return list(self.server.sessions)

    def drop_all(self) -> None:
        self.server.drop_all()

    def refusing(self) -> AbstractContextManager[None]:
        return _swapped(self.server, "api_key", "another-key")

    def failing_config(self, fault: ConfigFault) -> AbstractContextManager[None]:
        return _swapped(self.server, "config_fault", fault)

    def malformed(self) -> AbstractContextManager[None]:
        return _swapped(self.server, "malformed", True)


@contextmanager
def bland() -> Iterator[EngineHarness]:
    # The cap is raised: the shared suite runs sessions back to back whose slots free as their
    # DELETEs land; Bland's own cap of 3 has its own tests
    # (tests/engines/bland/test_bland_engine.py).
    with FakeBland(api_key=BLAND_KEY, cap=50) as server:
        yield BlandHarness(server)
        assert server.violations == [], server.violations


class GptTranslatorHarness:
    """``ENGINE=gpt-translator`` against :class:`FakeGptTranslator` (Socket.IO)."""

    name = "gpt-translator"

    def __init__(self, server: FakeGptTranslator) -> None:
        self.server = server

    def env(self) -> Mapping[str, str]:
        return {
            "ENGINE": "gpt-translator",
            "GPT_TRANSLATOR_API_KEY": self.server.api_key,
            "GPT_TRANSLATOR_URL": self.server.url,
        }

    def sessions(self) -> list[StandInSession]:
        return list(self.server.sessions)

    def drop_all(self) -> None:
        self.server.drop_all()

    def refusing(self) -> AbstractContextManager[None]:
        return _swapped(self.server, "refuse", True)

    def failing_config(self, fault: ConfigFault) -> AbstractContextManager[None]:
        return _swapped(self.server, "config_fault", fault)

    def malformed(self) -> AbstractContextManager[None]:
        return _swapped(self.server, "malformed", True)


@contextmanager
def gpt_translator() -> Iterator[EngineHarness]:
    with FakeGptTranslator() as server:
        yield GptTranslatorHarness(server)


# ENGINE name (or name+variant of its settings) -> a context manager that starts its stand-in
# and yields the harness.
HARNESSES: dict[str, Callable[[], AbstractContextManager[EngineHarness]]] = {
    "openai": openai_translate,
    "openai-realtime": openai_realtime,
    "auto": openai_auto,
    "soniox": soniox,
    "soniox+soniox-tts": soniox_tts,
    "bland": bland,
    "gpt-translator": gpt_translator,
}
