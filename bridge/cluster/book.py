"""Calls across instances (``REDIS_URL`` set): one call, its parts on several hosts.

Twilio gives no affinity: the voice webhook, each leg's Media Stream and each status callback
may reach a different instance. :class:`RedisCallBook` is the
:class:`~bridge.calls.book.CallBook` that lets the one
:class:`~bridge.calls.control.CallControl` work that way, with the call's shared state in
Redis (bridge/cluster/registry.py) beside this process's own table:

* the *home* instance (the one the voice webhook reached) admits the call, records it in the
  registry and dials the agent;
* the instance that receives a leg's Media Stream takes that leg: it holds the socket, runs
  the translation session *from* that party (their audio never leaves the instance) and
  reads the leg's stream of audio from the other party's instance (bridge/cluster/fabric.py);
* status callbacks are handled wherever they land, from the registry;
* ending a call is claimed once in Redis: the claimer says the notices and hangs up through
  Twilio's REST API, and tells every other instance holding part of the call to close its
  parts ("ending", then "ended" once the REST work is done) through its inbox stream;
* a heartbeat keeps this instance's keys alive and watches the instances holding the other
  leg of each call here (bridge/cluster/upkeep.py): one that stopped beating is gone, and the
  leg still here hears the ``instance_lost`` notice in its language before the call ends.

Concurrency: as CallControl, plus one heartbeat thread, one inbox thread, one reader thread per
leg held here, and short decision threads; Redis calls never run under the table's lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

import redis

from bridge.calls.book import AGENT_SID_WAIT_S, LegFactory, MemoryCallBook, StreamRejected
from bridge.calls.call import Call, EndReason
from bridge.calls.leg import LegConfig, Role
from bridge.cluster.fabric import ClusterLeg, LegReader, LegSender
from bridge.cluster.registry import INSTANCE_TTL_S, CallRegistry, SharedCall
from bridge.cluster.upkeep import ClusterUpkeep
from bridge.ops.metrics import Metrics
from bridge.telephony.media_wire import Start
from bridge.telephony.twiml import PARAM_LEG

log = logging.getLogger(__name__)
POLL_S = 0.05
T = TypeVar("T")


class RedisCallBook(MemoryCallBook):
    """This process's calls, plus their shared state and the way to their other parts."""

    sessions_follow_streams = True

    def __init__(self, client: redis.Redis, metrics: Metrics, instance: str | None = None) -> None:
        super().__init__()
        self.registry = CallRegistry(client, instance)
        self._client = client
        self._metrics = metrics
        self._sender = LegSender(client, metrics)
        self._readers: dict[tuple[str, Role], LegReader] = {}
        self._ended_signals: dict[str, threading.Event] = {}
        self._upkeep = ClusterUpkeep(self, client)
        self._detached = False

    @property
    def instance(self) -> str:
        return self.registry.instance

    def join(self) -> None:
        self.registry.refresh([])
        self._upkeep.start()
        log.info("cluster: instance %s joined", self.instance)

    def leave(self) -> None:
        with self._lock:
            if self._detached:
                return
            self._detached = True
        self._upkeep.stop()
        self._quietly(self.registry.leave)

    # -- what the upkeep calls --------------------------------------------------------------

    def let_go(self, call: Call) -> None:
        self._control.let_go(call)

    def lost(self, call: Call, detail: str) -> None:
        self._control.lost(call, detail)

    def ended_elsewhere(self, sid: str) -> None:
        self._ended_signal(sid).set()

    def active_calls(self) -> list[Call]:
        return self.calls()

    # -- admission and dialling (the home instance) -----------------------------------------

    def leg_factory(self, caller_sid: str, config: LegConfig, metrics: Metrics) -> LegFactory:
        return lambda role: ClusterLeg(caller_sid, role, metrics, config, self._sender)

    def admit(self, call: Call) -> bool:
        return self.registry.create(
            call.sid,
            caller_number=call.caller_number,
            dialled_number=call.dialled_number,
            caller_language=call.caller_language,
            agent_language=call.agent_language,
        )

    def agent_dialled(self, call: Call, agent_sid: str) -> bool:
        self.registry.set_agent_sid(call.sid, agent_sid)
        return not self.registry.ended(call.sid)

    # -- status callbacks (any instance) ----------------------------------------------------

    def locate(self, sid: str) -> tuple[Call, Role] | None:
        found = self._shared(sid)
        if found is None:
            return None
        shared, role = found
        return self.find(shared.sid) or self._replica(shared), role

    def first_answer(self, call: Call) -> bool:
        return self.registry.set_once(call.sid, "agent_answered")

    def leg_status(self, call: Call, role: Role, status: str, final: bool) -> None:
        fields = {"agent_status": status} if role == "agent" else {}
        if final:
            fields[f"{role}_live"] = "0"
        if fields:
            self.registry.update(call.sid, **fields)

    def leg_gone(self, call: Call, role: Role, reason: EndReason) -> None:
        """If another instance holds the leg's socket, that instance ends the call itself
        after a hang-up (it sees the stream stop); if it died instead, the socket dropped with
        it and Twilio ended the leg: then the call ends as ``instance_lost``, with a notice
        for the party still there."""
        found = self._shared(call.sid)
        owner = None if found is None else found[0].owner(role)
        if owner is None or owner == self.instance:
            self._control.end(call, reason)
            return

        def decide() -> None:
            deadline = time.monotonic() + INSTANCE_TTL_S + 1.0
            while time.monotonic() < deadline:
                if self.registry.ended(call.sid):
                    return
                if not self.registry.alive(owner):
                    self.lost(call, f"the instance holding the {role} leg ({owner}) stopped")
                    return
                time.sleep(0.2)
            self._control.end(call, reason)

        threading.Thread(target=decide, name=f"call-leg-gone:{call.sid[-6:]}", daemon=True).start()

    # -- Media Streams (the instance that holds the socket) ---------------------------------

    def bind(self, start: Start, bridge_sid: str) -> tuple[Call, Role, bool]:
        try:
            shared, role = self._shared_for_stream(start, bridge_sid)
            # Cluster-wide, once per leg: a second stream for it (on any instance) is refused
            # before it takes anything (the leg's owner, its reader) from the first.
            if not self.registry.claim_stream(shared.sid, role, start.stream_sid):
                raise StreamRejected(f"the {role} leg has a stream already")
            ended = self.registry.ended(shared.sid)
            if ended and role == "caller":
                self.registry.update(shared.sid, caller_stream_seen="1")
        except redis.RedisError as exc:
            raise StreamRejected(f"the call registry is unreachable: {exc}") from exc
        if ended:
            if role != "caller":
                raise StreamRejected("the call has ended")
            # A caller still owed a notice keeps the stream until the redirect ends it.
            gone = self._replica(shared)
            gone.mark_ended("caller_hung_up")
            gone.caller_notice_pending = True
            return gone, role, False
        with self._lock:
            call = self._by_sid.get(shared.sid)
            created = call is None
            if call is None:
                call = self._replica(shared)
                self._by_sid[shared.sid] = call
                if shared.agent_sid is not None:
                    self._by_sid[shared.agent_sid] = call
        if call.ended.is_set():
            return call, role, created
        if role == "agent" and call.agent_sid is None and shared.agent_sid is not None:
            call.set_agent_sid(shared.agent_sid)
            self.add(shared.agent_sid, call)
        fields = {f"{role}_owner": self.instance}
        if role == "caller":
            fields["caller_stream_seen"] = "1"
        try:
            self.registry.update(call.sid, **fields)
        except redis.RedisError as exc:
            raise StreamRejected(f"the call registry is unreachable: {exc}") from exc
        self._read_leg(call, role)
        return call, role, created

    def _shared_for_stream(self, start: Start, bridge_sid: str) -> tuple[SharedCall, Role]:
        shared = self.registry.load(bridge_sid) if bridge_sid else None
        if shared is None:
            raise StreamRejected("start names no call this bridge answered or created")
        if start.call_sid != shared.sid:
            # The agent's stream may start before the home instance has the REST answer.
            deadline = time.monotonic() + AGENT_SID_WAIT_S
            while shared.agent_sid is None and time.monotonic() < deadline:
                time.sleep(POLL_S)
                shared = self.registry.load(bridge_sid) or shared
        if start.call_sid == shared.sid:
            role: Role = "caller"
        elif start.call_sid == shared.agent_sid:
            role = "agent"
        else:
            raise StreamRejected("start.callSid is not a leg of the named call")
        if start.custom_parameters.get(PARAM_LEG) != role:
            raise StreamRejected("stream parameters do not match the call")
        return shared, role

    def _read_leg(self, call: Call, role: Role) -> None:
        """This instance holds ``role``'s socket: read what the other instance sends it."""
        leg = call.legs[role]
        assert isinstance(leg, ClusterLeg)
        with self._lock:
            reader = None
            if (call.sid, role) not in self._readers:
                reader = LegReader(self._client, call.sid, leg, self._metrics.fabric_hop.observe)
                self._readers[(call.sid, role)] = reader
        if reader is not None:
            reader.start()

    def ended_recently(self, caller_sid: str) -> bool:
        """Ended here, or anywhere: the end claim outlives the call (REMEMBER_ENDED_S). With
        Redis unreachable this cannot tell; admission then fails on its own."""
        if super().ended_recently(caller_sid):
            return True
        return bool(self._quietly(lambda: self.registry.ended(caller_sid)))

    def leg_left(self, call: Call, role: Role) -> None:
        self._quietly(lambda: self.registry.update(call.sid, **{f"{role}_live": "0"}))

    # -- ending -----------------------------------------------------------------------------

    def claim_end(self, call: Call, reason: EndReason) -> bool:
        try:
            return self.registry.claim_end(call.sid, reason)
        except redis.RedisError as exc:
            # Nobody can coordinate: end what we can see, as one process would.
            call.log.warning("cannot claim the end (%s); ending it from here", exc)
            return True

    def gather(self, call: Call) -> set[str]:
        shared = self._quietly(lambda: self.registry.load(call.sid))
        if shared is None:
            return set()
        with call.lock:
            call.caller_live = shared.caller_live
            call.agent_live = shared.agent_live
            call.agent_answered = call.agent_answered or shared.agent_answered
            if call.agent_sid is None and shared.agent_sid is not None:
                call.agent_sid = shared.agent_sid
        if shared.caller_stream_seen:
            call.caller_stream_seen.set()
        others = {shared.home, shared.caller_owner or "", shared.agent_owner or ""}
        return others - {"", self.instance}

    def tell(self, others: set[str], what: str, call: Call) -> None:
        for other in others:
            self._quietly(partial(self.registry.tell, other, what, call.sid))

    def wait_caller_stream(self, call: Call, timeout: float) -> None:
        """The caller's stream may start on any instance: watch the registry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self._quietly(lambda: self.registry.load(call.sid))
            if found is None or found.caller_stream_seen or call.caller_stream_seen.is_set():
                return
            time.sleep(0.1)

    def wait_ended_elsewhere(self, sid: str, timeout: float) -> None:
        self._ended_signal(sid).wait(timeout)

    def end_reason(self, sid: str) -> str | None:
        return self._quietly(lambda: self.registry.end_reason(sid))

    def live_calls(self, sids: Sequence[str]) -> set[str] | None:
        """Which of these calls are in progress on any instance (None: Redis cannot say);
        the admin API answers for the whole cluster from it (bridge/web/api_shared.py)."""
        return self._quietly(lambda: self.registry.live(sids))

    def erase_shared(self, sid: str, agent_sid: str | None) -> bool:
        """An erased call's shared state removed from Redis; False when Redis failed (then
        it expires on its own within CALL_TTL_S: the call is over, nobody refreshes it)."""
        return self._quietly(lambda: self.registry.erase(sid, agent_sid)) is not None

    def forget(self, call: Call) -> bool:
        held = super().forget(call)
        with self._lock:
            readers = [self._readers.pop((call.sid, r), None) for r in ("caller", "agent")]
            self._ended_signals.pop(call.sid, None)
        for reader in readers:
            if reader is not None:
                reader.stop()
        self._sender.forget(call.sid)
        return held

    # -- helpers ----------------------------------------------------------------------------

    def _ended_signal(self, sid: str) -> threading.Event:
        with self._lock:
            return self._ended_signals.setdefault(sid, threading.Event())

    def _shared(self, sid: str) -> tuple[SharedCall, Role] | None:
        """The call one of whose legs is ``sid``, from the registry, and that leg's role."""
        try:
            caller_sid = self.registry.caller_sid_of(sid)
            shared = None if caller_sid is None else self.registry.load(caller_sid)
        except redis.RedisError as exc:
            log.warning("call=%s cluster: registry unreachable: %s", sid, exc)
            return None
        if shared is None:
            return None
        return shared, "caller" if sid == shared.sid else "agent"

    def _replica(self, shared: SharedCall) -> Call:
        """This instance's view of a call admitted anywhere (not registered here)."""
        call = self._control.new_call(
            shared.sid,
            shared.caller_number,
            shared.dialled_number,
            shared.caller_language,
            shared.agent_language,
        )
        # The call's age is the home's: wall clocks agree across hosts, monotonic ones not.
        call.started_at = time.monotonic() - max(0.0, time.time() - shared.started_wall)
        if shared.agent_sid is not None:
            call.set_agent_sid(shared.agent_sid)
        with call.lock:
            call.caller_live = shared.caller_live
            call.agent_live = shared.agent_live
            call.agent_answered = shared.agent_answered
        if shared.caller_stream_seen:
            call.caller_stream_seen.set()
        return call

    @staticmethod
    def _quietly(action: Callable[[], T]) -> T | None:
        try:
            return action()
        except redis.RedisError as exc:
            log.warning("cluster: Redis call failed: %s", exc)
            return None
