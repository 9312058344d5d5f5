"""Where call control finds and registers calls: the seam between one process and several.

:class:`~bridge.calls.control.CallControl` is the same code with or without ``REDIS_URL``. What
differs is behind :class:`CallBook`: finding a call by either leg's CallSid, registering a new
one, claiming its end, and reaching the parts of a call that another instance holds.
:class:`MemoryCallBook` keeps calls in this process only, as a single host needs; the Redis
book (bridge/cluster/book.py) shares them across instances.

Every method here is quick and never blocks on the network except where it says so; the
table's lock is never held while a call's own lock is taken.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from bridge.calls.call import Call, EndReason
from bridge.calls.leg import CallLeg, LegConfig, Role
from bridge.ops.metrics import Metrics
from bridge.telephony.media_wire import Start
from bridge.telephony.twiml import PARAM_LEG

if TYPE_CHECKING:
    from bridge.calls.control import CallControl

# The agent's stream can only start after Twilio answered our create request; if its `start`
# races the REST response, wait this long for the CallSid before refusing the stream.
AGENT_SID_WAIT_S = 5.0
# A voice webhook's signature has no timestamp, so a captured one can be re-posted at any time:
# ended calls are remembered this long (and at most this many per process), and a replay for
# one is never admitted again (a replay older than that would be: see docs/security.md).
REMEMBER_ENDED_S = 24 * 3600
REMEMBER_ENDED_MAX = 100_000
LegFactory = Callable[[Role], CallLeg]


class StreamRejected(Exception):
    """A Media Stream `start` that does not belong to a live call of ours."""


class CallBook(Protocol):
    """What :class:`~bridge.calls.control.CallControl` needs to know where calls are."""

    # Several instances: each translation session opens where its speaker's stream lands
    # (their audio never leaves that instance), not when the call is admitted.
    sessions_follow_streams: bool

    def serve(self, control: CallControl) -> None:
        """Serve ``control`` (no I/O: the constructor of the control calls it)."""

    def join(self) -> None:
        """Start (several instances: join the cluster; raises if Redis is unreachable)."""

    def leave(self) -> None:
        """Stop: this instance leaves (idempotent)."""

    # -- the table of calls held in this process --------------------------------------------

    def find(self, sid: str) -> Call | None: ...

    def calls(self) -> list[Call]: ...

    def register(
        self, caller_sid: str, make: Callable[[], Call], limit: int
    ) -> tuple[Call | None, bool]:
        """The call of ``caller_sid``: the one held already, else a new one from ``make`` if
        fewer than ``limit`` are held (else None). Returns it and whether it is new."""

    def add_agent(self, call: Call, agent_sid: str) -> bool:
        """The agent's CallSid is known; False if the call ended meanwhile (not added)."""

    def holds(self, call: Call) -> bool: ...

    def forget(self, call: Call) -> bool:
        """Drop ``call`` and what this process held of it; whether it was held here."""

    def unregister(self, call: Call) -> None: ...

    def ended_recently(self, caller_sid: str) -> bool:
        """Whether the call of ``caller_sid`` ended (here, or with several instances anywhere)
        within REMEMBER_ENDED_S: a voice webhook for it is a replay."""

    # -- what the call's parts elsewhere need ----------------------------------------------

    def leg_factory(self, caller_sid: str, config: LegConfig, metrics: Metrics) -> LegFactory:
        """How the call's two legs are built here."""

    def admit(self, call: Call) -> bool:
        """Record a call just admitted here; False if another instance admitted it already
        (a retried webhook). May raise if the shared state cannot be reached."""

    def agent_dialled(self, call: Call, agent_sid: str) -> bool:
        """Share the agent's CallSid; False if the call ended elsewhere while dialling."""

    def locate(self, sid: str) -> tuple[Call, Role] | None:
        """For a callback about leg ``sid``: its call (held here, or a view of it) and role."""

    def first_answer(self, call: Call) -> bool:
        """Whether this is the first time the agent's answer is reported (once per call)."""

    def leg_status(self, call: Call, role: Role, status: str, final: bool) -> None:
        """Share a leg's new status."""

    def leg_gone(self, call: Call, role: Role, reason: EndReason) -> None:
        """Twilio says a leg is over: end the call (or learn that its holder died)."""

    def bind(self, start: Start, bridge_sid: str) -> tuple[Call, Role, bool]:
        """The call and leg a stream's ``start`` belongs to, and whether the call became held
        here just now; raises :class:`StreamRejected`, also for a leg that has (or had) a
        stream already: a leg takes one stream in its life, and a refused one changes nothing
        of the call."""

    def leg_left(self, call: Call, role: Role) -> None:
        """A leg's stream ended on this instance."""

    def claim_end(self, call: Call, reason: EndReason) -> bool:
        """Whether this instance runs the call's teardown (exactly one does)."""

    def gather(self, call: Call) -> set[str]:
        """Before a teardown: bring ``call`` up to date; the other instances holding parts."""

    def tell(self, others: set[str], what: str, call: Call) -> None:
        """Tell the instances in ``others`` that the call is ``ending`` or ``ended``."""

    def wait_caller_stream(self, call: Call, timeout: float) -> None:
        """Wait until the caller's stream has started anywhere (its TwiML has run)."""

    def wait_ended_elsewhere(self, sid: str, timeout: float) -> None:
        """Wait for the instance ending ``sid`` to finish its notices."""

    def end_reason(self, sid: str) -> str | None:
        """Why the instance that ended ``sid`` ended it, if another instance did."""


class MemoryCallBook:
    """Calls in this process only: a table by either leg's CallSid."""

    sessions_follow_streams = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_sid: dict[str, Call] = {}
        self._ended: OrderedDict[str, float] = OrderedDict()  # caller's CallSid → ended at
        self._served: CallControl | None = None

    def serve(self, control: CallControl) -> None:
        self._served = control

    def join(self) -> None:
        """Nothing to join."""

    def leave(self) -> None:
        """Nothing to leave."""

    # -- the table --------------------------------------------------------------------------

    def find(self, sid: str) -> Call | None:
        with self._lock:
            return self._by_sid.get(sid)

    def calls(self) -> list[Call]:
        with self._lock:
            return list({id(c): c for c in self._by_sid.values()}.values())

    def count(self) -> int:
        with self._lock:
            return len({id(c) for c in self._by_sid.values()})

    def register(
        self, caller_sid: str, make: Callable[[], Call], limit: int
    ) -> tuple[Call | None, bool]:
        with self._lock:
            call = self._by_sid.get(caller_sid)
            if call is not None:
                return call, False
            if len({id(c) for c in self._by_sid.values()}) >= limit:
                return None, False
            call = make()
            self._by_sid[caller_sid] = call
            return call, True

    def add_agent(self, call: Call, agent_sid: str) -> bool:
        with self._lock:
            # Under the table's lock, so a teardown running now either sees this SID (and
            # removes it) or ran before, in which case the call is not re-registered.
            live = call.set_agent_sid(agent_sid)
            if live:
                self._by_sid[agent_sid] = call
        return live

    def add(self, sid: str, call: Call) -> None:
        with self._lock:
            self._by_sid[sid] = call

    def holds(self, call: Call) -> bool:
        with self._lock:
            return self._by_sid.get(call.sid) is call

    def forget(self, call: Call) -> bool:
        held = False
        with self._lock:
            if call.ended.is_set():
                self._remember_ended(call.sid)
            for sid in (call.sid, call.agent_sid):
                if sid is not None and self._by_sid.get(sid) is call:
                    del self._by_sid[sid]
                    held = True
        return held

    def unregister(self, call: Call) -> None:
        with self._lock:
            if self._by_sid.get(call.sid) is call:
                del self._by_sid[call.sid]

    def ended_recently(self, caller_sid: str) -> bool:
        with self._lock:
            ended_at = self._ended.get(caller_sid)
        return ended_at is not None and time.monotonic() - ended_at < REMEMBER_ENDED_S

    def _remember_ended(self, caller_sid: str) -> None:
        """Under the table's lock. Oldest first, so the bound drops the stalest."""
        now = time.monotonic()
        self._ended[caller_sid] = now
        self._ended.move_to_end(caller_sid)
        while self._ended and (
            len(self._ended) > REMEMBER_ENDED_MAX
            or now - next(iter(self._ended.values())) >= REMEMBER_ENDED_S
        ):
            self._ended.popitem(last=False)

    # -- one process: nothing is elsewhere --------------------------------------------------

    def leg_factory(self, caller_sid: str, config: LegConfig, metrics: Metrics) -> LegFactory:
        return lambda role: CallLeg(caller_sid, role, metrics, config)

    def admit(self, call: Call) -> bool:
        return True

    def agent_dialled(self, call: Call, agent_sid: str) -> bool:
        return True

    def locate(self, sid: str) -> tuple[Call, Role] | None:
        call = self.find(sid)
        if call is None:
            return None
        role = call.role_of(sid)
        return None if role is None else (call, role)

    def first_answer(self, call: Call) -> bool:
        with call.lock:
            first = not call.agent_answered
            call.agent_answered = True
        return first

    def leg_status(self, call: Call, role: Role, status: str, final: bool) -> None:
        """Nobody else to tell."""

    def leg_gone(self, call: Call, role: Role, reason: EndReason) -> None:
        self._control.end(call, reason)

    def bind(self, start: Start, bridge_sid: str) -> tuple[Call, Role, bool]:
        call = self.find(start.call_sid) or self.find(bridge_sid)
        if call is None:
            raise StreamRejected("start names no call this bridge answered or created")
        if start.call_sid != call.sid:
            call.agent_sid_known.wait(AGENT_SID_WAIT_S)
        role = call.role_of(start.call_sid)
        if role is None:
            raise StreamRejected("start.callSid is not a leg of the named call")
        if bridge_sid != call.sid or start.custom_parameters.get(PARAM_LEG) != role:
            raise StreamRejected("stream parameters do not match the call")
        if call.legs[role].attached:
            # ``attach`` refuses it too (atomically, and a leg whose stream ended); refused
            # here, nothing else of the binding is done for it.
            raise StreamRejected(f"the {role} leg has a stream already")
        return call, role, False

    def leg_left(self, call: Call, role: Role) -> None:
        """Nobody else to tell."""

    def claim_end(self, call: Call, reason: EndReason) -> bool:
        return True

    def gather(self, call: Call) -> set[str]:
        return set()

    def tell(self, others: set[str], what: str, call: Call) -> None:
        """Nobody else to tell."""

    def wait_caller_stream(self, call: Call, timeout: float) -> None:
        call.caller_stream_seen.wait(timeout)

    def wait_ended_elsewhere(self, sid: str, timeout: float) -> None:
        """Never called: one process ends its own calls."""

    def end_reason(self, sid: str) -> str | None:
        return None

    @property
    def _control(self) -> CallControl:
        assert self._served is not None, "serve() was not called"
        return self._served


__all__ = [
    "AGENT_SID_WAIT_S",
    "REMEMBER_ENDED_MAX",
    "REMEMBER_ENDED_S",
    "CallBook",
    "LegFactory",
    "MemoryCallBook",
    "StreamRejected",
]
