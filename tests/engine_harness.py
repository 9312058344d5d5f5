"""What the shared engine suite (tests/engines/test_engines.py) needs from each vendor's stand-in.

Every engine of bridge/engines/registry.py (except ``relay``) has a loopback stand-in in
``tests/fakes/`` that speaks that vendor's documented wire protocol, and a harness
(tests/engine_standins.py) that the suite drives the same way for every engine. Stand-ins
translate like
``tests.fakes.openai_translate.ToneTranslator``: while the speaker's audio carries energy, the
listener gets a tone of ``tone_for(output_language)`` Hz, plus source and translated text.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Literal, Protocol, runtime_checkable

# How a stand-in fails a new session's configuration (the vendor's session.update, start
# request or translation_start): ``reject`` answers it with the vendor's error, ``close``
# closes the socket on it, ``drop`` accepts it and then closes the socket at once.
ConfigFault = Literal["reject", "close", "drop"]


class StandInSession(Protocol):
    """One vendor-side session as the stand-in saw it."""

    @property
    def received_ms(self) -> float:
        """Milliseconds of the speaker's audio the vendor received."""

    @property
    def ended_cleanly(self) -> bool:
        """The client ended it the vendor's documented way (session.close, DELETE, stop...)."""


class EngineHarness(Protocol):
    """A running stand-in for one engine, and how to point the bridge at it."""

    name: str  # the ENGINE value

    def env(self) -> Mapping[str, str]:
        """Settings that select this engine and point it at the stand-in (keys, base URLs)."""

    def sessions(self) -> list[StandInSession]:
        """Every vendor-side session opened so far, oldest first."""

    def drop_all(self) -> None:
        """Close every live connection abruptly, as a network fault would."""

    def refusing(self) -> AbstractContextManager[None]:
        """While entered, new sessions are refused the way the vendor refuses a bad key."""

    def failing_config(self, fault: ConfigFault) -> AbstractContextManager[None]:
        """While entered, every new session's configuration fails as ``fault`` says."""

    def malformed(self) -> AbstractContextManager[None]:
        """While entered, the stand-in also sends every new session malformed messages (not
        JSON, wrong field types, unknown events) once it is configured."""


@runtime_checkable
class TimedHarness(Protocol):
    """A harness whose stand-in also tells when it sent each piece of translated audio, so
    ``bench/engines.py`` can measure what the bridge adds (sent → ``on_audio``)."""

    def output_sent_at(self) -> list[float]:
        """``time.monotonic()`` at which each translated-audio message was sent, oldest first
        (one message per ``on_audio`` call of the engine)."""
