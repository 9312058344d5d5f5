"""The stand-in of every translation engine, as the shared suite (tests/test_engines.py) drives it.

One entry per engine of bridge/engines.py (``relay`` needs none). Each vendor's stand-in lives
in tests/fakes/ and speaks that vendor's documented wire protocol; the harness here adapts it
to :class:`tests.engine_harness.EngineHarness`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

from tests.bridge_process import OPENAI_KEY
from tests.engine_harness import EngineHarness, StandInSession
from tests.fakes.audio import ENGINE_RATE_HZ
from tests.fakes.bland import FakeBland
from tests.fakes.openai_session import FakeSession
from tests.fakes.openai_translate import FakeTranslationServer


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

    @contextmanager
    def refusing(self) -> Iterator[None]:
        self.server.api_key = "sk-another-key"
        try:
            yield
        finally:
            self.server.api_key = None


@contextmanager
def openai_translate() -> Iterator[EngineHarness]:
    with FakeTranslationServer() as server:
        yield OpenAITranslateHarness(server)


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

    @contextmanager
    def refusing(self) -> Iterator[None]:
        self.server.api_key = "another-key"
        try:
            yield
        finally:
            self.server.api_key = BLAND_KEY


@contextmanager
def bland() -> Iterator[EngineHarness]:
    # The cap is raised: the shared suite runs sessions back to back whose slots free as their
    # DELETEs land; Bland's own cap of 3 has its own tests (tests/test_bland_engine.py).
    with FakeBland(api_key=BLAND_KEY, cap=50) as server:
        yield BlandHarness(server)
        assert server.violations == [], server.violations


# ENGINE name -> a context manager that starts its stand-in and yields the harness.
HARNESSES: dict[str, Callable[[], AbstractContextManager[EngineHarness]]] = {
    "openai": openai_translate,
    "bland": bland,
}
