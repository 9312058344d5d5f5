"""Fixtures shared by the modules that run whole calls (each module gets its own instances)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.bridge_process import OPENAI_KEY
from tests.call_helpers import Stack, bridge_stack, end_leftover_calls
from tests.fakes.openai_translate import FakeTranslationServer


@pytest.fixture(autouse=True)
def no_call_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that fails half-way leaves its calls up on its module's shared bridge; end them,
    so the next test starts from an idle bridge instead of failing on the leftover."""
    yield
    for name in ("stack", "relay_stack"):
        if name in request.fixturenames:
            end_leftover_calls(request.getfixturevalue(name))


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeTranslationServer]:
    """The OpenAI realtime translation stand-in (tone translator)."""
    with FakeTranslationServer() as server:
        yield server


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    openai_fake: FakeTranslationServer,
) -> Iterator[Stack]:
    """The bridge under gunicorn with ENGINE=openai against the stand-ins, default settings."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    env = {"OPENAI_API_KEY": OPENAI_KEY}
    with bridge_stack(tmp_path_factory.mktemp(name), env, openai_fake) as stack:
        yield stack


@pytest.fixture(scope="module")
def relay_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The bridge under gunicorn with ENGINE=relay (no translation) against the stand-ins."""
    with bridge_stack(tmp_path_factory.mktemp("relay"), {}, None) as stack:
        yield stack
