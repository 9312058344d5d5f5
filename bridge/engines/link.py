"""One vendor session as the shared session machinery (bridge/engines/upstream.py) drives it:
its states and the protocol every vendor's link implements."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Protocol

from bridge.audio.pcm import Samples
from bridge.ops.logs import CallLogger

# A link that stayed up this long worked: its loss starts a fresh budget. Links that never did
# (a server that accepts each session, then drops it) share one budget with growing backoff.
STABLE_S = 2.0


class LinkState(enum.Enum):
    OPENING = "opening"
    UP = "up"
    RECONNECTING = "reconnecting"
    FINISHING = "finishing"
    DEAD = "dead"  # lost for good: the owner must open a replacement
    CLOSED = "closed"


class Link(Protocol):
    """One vendor session. :meth:`open`, :meth:`send` and :meth:`finish` are called from the
    owner's writer thread only; the link's own reader thread changes ``state`` and calls the
    ``on_change`` it was made with so the writer looks again."""

    name: str
    state: LinkState
    dead_reason: str
    opened_at: float  # time.monotonic() when it opened
    expires_at: float | None  # monotonic time the vendor will end the session, if it says
    worked: bool  # stayed up STABLE_S at some point (a loss of it starts a fresh budget)

    def open(self) -> None:
        """Connect and configure; raises :class:`EngineUnavailable` if that is impossible."""

    def send(self, samples: Samples) -> bool:
        """Append audio at the link's input rate; False (nothing sent) if the link is not up."""

    def finish(self) -> None:
        """End the vendor session politely (flush what it owes, then close)."""

    def join(self, timeout: float) -> None:
        """Wait for the reader to end; close the socket if it does not in time."""


class LinkFactory(Protocol):
    """Makes a not yet opened link for a session (the engine binds its client and settings)."""

    def __call__(
        self,
        *,
        name: str,
        on_change: Callable[[], None],
        log: CallLogger,
        count: Callable[[str], None],
    ) -> Link: ...
