"""Call control across instances (``REDIS_URL`` set): one call, its parts on several hosts.

Twilio gives no affinity: the voice webhook, each leg's Media Stream and each status callback
may reach a different instance. :class:`ClusterCallControl` is :class:`CallControl` with the
call's shared state in Redis (bridge/registry.py) instead of one process's memory:

* the *home* instance (the one the voice webhook reached) admits the call, records it in the
  registry and dials the agent;
* the instance that receives a leg's Media Stream takes that leg: it holds the socket, runs
  the translation session *from* that party (their audio never leaves the instance) and
  reads the leg's stream of audio from the other party's instance (bridge/redis_fabric.py);
* status callbacks are handled wherever they land, from the registry;
* ending a call is claimed once in Redis: the claimer says the notices and hangs up through
  Twilio's REST API, and tells every other instance holding part of the call to close its
  parts ("ending", then "ended" once the REST work is done) through its inbox stream;
* a heartbeat keeps this instance's keys alive and watches the instances holding the other
  leg of each call here: one that stopped beating is gone, and the leg still here hears the
  ``instance_lost`` notice in its language before the call ends.

Without ``REDIS_URL`` none of this is built: the app uses :class:`CallControl` as before.
Concurrency: as CallControl, plus one heartbeat thread, one inbox thread, one reader thread per
leg held here, and short release threads; Redis calls never run under the registry lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

import redis

from bridge.call import DIRECTION_OF_SPEAKER, LISTENER_OF, Call, EndReason
from bridge.cluster_upkeep import ClusterUpkeep
from bridge.control import (
    _AGENT_FAILURE,
    AGENT_SID_WAIT_S,
    CALLER_TWIML_WAIT_S,
    MACHINE_ANSWERS,
    SESSION_JOIN_S,
    CallControl,
    StreamRejected,
)
from bridge.engine import Engine
from bridge.events import AgentAnswered, CallEnded, EventHub
from bridge.leg import LegConfig, Role
from bridge.metrics import Metrics
from bridge.prompts import PromptName
from bridge.redis_fabric import ClusterLeg, LegReader, LegSender
from bridge.registry import (
    INSTANCE_TTL_S,
    CallRegistry,
    SharedCall,
)
from bridge.settings import Settings
from bridge.twilio_media import Start
from bridge.twilio_rest import FINAL_STATUSES, TwilioRest
from bridge.twiml import PARAM_CALL, PARAM_LEG

log = logging.getLogger(__name__)
POLL_S = 0.05
# How long an instance that is not ending a call waits for the claimer's "ended" before it
# closes its legs anyway (the claimer may have died mid-teardown).
RELEASE_WAIT_S = 15.0
T = TypeVar("T")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ClusterCallControl(CallControl):
    """:class:`CallControl` whose calls may span instances, coordinated through Redis."""

    def __init__(
        self,
        settings: Settings,
        rest: TwilioRest,
        engine: Engine,
        metrics: Metrics,
        hub: EventHub,
        *,
        client: redis.Redis,
        instance: str | None = None,
    ) -> None:
        super().__init__(settings, rest, engine, metrics, hub)
        self.registry = CallRegistry(client, instance)
        self._client = client
        self._sender = LegSender(client, metrics)
        self._readers: dict[tuple[str, Role], LegReader] = {}
        self._ended_signals: dict[str, threading.Event] = {}
        self._upkeep = ClusterUpkeep(self, client)

    @property
    def instance(self) -> str:
        return self.registry.instance

    def start(self) -> None:
        """Announce this instance and start its heartbeat and inbox. Raises if Redis is
        unreachable: an instance that cannot share state must not take calls."""
        self.registry.refresh([])
        self._upkeep.start()
        log.info("cluster: instance %s joined", self.instance)

    # -- admission and dialling (the home instance) ------------------------------------------

    def _new_call(
        self,
        caller_sid: str,
        caller_number: str,
        dialled_number: str,
        caller_language: str,
        agent_language: str,
    ) -> Call:
        config = LegConfig.from_settings(self._settings)
        return Call(
            caller_sid=caller_sid,
            caller_number=caller_number,
            dialled_number=dialled_number,
            caller_language=caller_language,
            agent_language=agent_language,
            metrics=self._metrics,
            leg_config=config,
            publish=self.hub.publish,
            leg_factory=lambda role: ClusterLeg(
                caller_sid, role, self._metrics, config, self._sender
            ),
        )

    def _admitted(self, call: Call) -> bool:
        try:
            created = self.registry.create(
                call.sid,
                caller_number=call.caller_number,
                dialled_number=call.dialled_number,
                caller_language=call.caller_language,
                agent_language=call.agent_language,
            )
        except redis.RedisError:
            self._unregister(call)
            raise  # the webhook's error handler tells the caller the service is unavailable
        if not created:
            # Twilio retried the webhook and it landed here: the same TwiML, no second dial.
            call.log.info("already admitted by another instance")
            self._unregister(call)
        return created

    def _open_sessions(self, call: Call) -> None:
        """Sessions open where each speaker's socket lands (see bind_stream), not here."""

    def _agent_dialled(self, call: Call, agent_sid: str) -> None:
        self.registry.set_agent_sid(call.sid, agent_sid)
        if self.registry.ended(call.sid) and not call.ended.is_set():
            # Ended elsewhere while we dialled (its teardown could not know this SID yet).
            self._quietly(call, "cancel the agent", lambda: self._rest.hang_up(agent_sid, False))

    # -- status callbacks (any instance) ----------------------------------------------------

    def on_status(self, call_sid: str, status: str) -> bool:
        found = self._shared(call_sid)
        if found is None:
            return False
        shared, role = found
        call = self.find(shared.sid) or self._replica(shared)
        call.log.info("%s leg status %s (instance %s)", role, status, self.instance)
        final = status in FINAL_STATUSES
        if role == "agent":
            answered_now = status == "in-progress" and self.registry.set_once(
                shared.sid, "agent_answered"
            )
            fields = {"agent_status": status}
            if final:
                fields["agent_live"] = "0"
            self.registry.update(shared.sid, **fields)
            with call.lock:
                call.agent_status = status
                call.agent_answered = call.agent_answered or answered_now
                call.agent_live = call.agent_live and not final
            if answered_now:
                self.hub.publish(AgentAnswered(call.sid, _utcnow()))
            if status in _AGENT_FAILURE:
                self.end(call, _AGENT_FAILURE[status], notice="agent_unavailable")
            elif status == "completed":
                self._leg_gone(call, shared, "agent", "agent_hung_up")
        elif final:
            self.registry.update(shared.sid, caller_live="0")
            with call.lock:
                call.caller_live = False
            self._leg_gone(call, shared, "caller", "caller_hung_up")
        return True

    def on_answered_by(self, call_sid: str, answered_by: str) -> bool:
        found = self._shared(call_sid)
        if found is None or found[1] != "agent":
            return False
        call = self.find(found[0].sid) or self._replica(found[0])
        call.log.info("agent leg answered by %s", answered_by)
        if answered_by in MACHINE_ANSWERS:
            detail = f"AnsweredBy={answered_by}"
            self.end(call, "agent_machine", notice="agent_unavailable", detail=detail)
        return True

    def _leg_gone(self, call: Call, shared: SharedCall, role: Role, reason: EndReason) -> None:
        """Twilio says a leg is over. If another instance holds its socket, that instance
        ends the call itself after a hang-up (it sees the stream stop); if it died instead,
        the socket dropped with it and Twilio ended the leg: then the call ends as
        ``instance_lost``, with a notice for the party still there."""
        owner = shared.owner(role)
        if owner is None or owner == self.instance:
            self.end(call, reason)
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
            self.end(call, reason)

        self._spawn(decide, f"call-leg-gone:{call.sid[-6:]}")

    # -- Media Streams (the instance that holds the socket) ---------------------------------

    def bind_stream(self, start: Start) -> tuple[Call, Role]:
        if start.account_sid != self._settings.twilio_account_sid:
            raise StreamRejected("start.accountSid is not this account")
        bridge_sid = start.custom_parameters.get(PARAM_CALL, "")
        try:
            shared, role = self._shared_for_stream(start, bridge_sid)
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
            return gone, role
        with self._lock:
            call = self._by_sid.get(shared.sid)
            created = call is None
            if call is None:
                call = self._replica(shared)
                self._by_sid[shared.sid] = call
                if shared.agent_sid is not None:
                    self._by_sid[shared.agent_sid] = call
        if created:
            self._metrics.active_calls.inc()
            self._ensure_watchdog()
        if call.ended.is_set():
            raise StreamRejected("the call has ended")
        if role == "agent" and call.agent_sid is None and shared.agent_sid is not None:
            call.set_agent_sid(shared.agent_sid)
            with self._lock:
                self._by_sid[shared.agent_sid] = call
        fields = {f"{role}_owner": self.instance}
        if role == "caller":
            fields["caller_stream_seen"] = "1"
            call.caller_stream_seen.set()
        try:
            self.registry.update(call.sid, **fields)
        except redis.RedisError as exc:
            raise StreamRejected(f"the call registry is unreachable: {exc}") from exc
        self._take_leg(call, role)
        return call, role

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

    def _take_leg(self, call: Call, role: Role) -> None:
        """This instance holds ``role``'s socket: read its audio, translate its speech."""
        leg = call.legs[role]
        assert isinstance(leg, ClusterLeg)
        with self._lock:
            reader = None
            if (call.sid, role) not in self._readers:
                reader = LegReader(self._client, call.sid, leg, self._metrics.fabric_hop.observe)
                self._readers[(call.sid, role)] = reader
        if reader is not None:
            reader.start()
        direction = DIRECTION_OF_SPEAKER[role]
        if direction not in call.sessions:
            listener = LISTENER_OF[direction]
            language = call.agent_language if listener == "agent" else call.caller_language
            self._open_session(call, direction, language)

    def on_stream_ended(self, call: Call, role: Role) -> None:
        with call.lock:
            if role == "caller":
                call.caller_live = False
            else:
                call.agent_live = False
        if not call.ended.is_set():
            self._quietly_redis(lambda: self.registry.update(call.sid, **{f"{role}_live": "0"}))
        self.end(call, "caller_hung_up" if role == "caller" else "agent_hung_up")

    # -- ending -----------------------------------------------------------------------------

    def end(
        self,
        call: Call,
        reason: EndReason,
        notice: PromptName | None = None,
        *,
        notify_agent: bool = False,
        detail: str = "",
    ) -> None:
        """End the whole call once cluster-wide; returns at once. The instance that claims
        the end runs the teardown; any other lets go of its own parts of the call."""
        if not call.mark_ended(reason, detail):
            return
        try:
            claimed = self.registry.claim_end(call.sid, reason)
        except redis.RedisError as exc:
            # Nobody can coordinate: end what we can see, as one process would.
            call.log.warning("cannot claim the end (%s); ending it from here", exc)
            claimed = True
        if not claimed:
            with self._lock:
                held = self._by_sid.get(call.sid) is call
            if held:  # (a call only looked up for a callback holds nothing here)
                self._spawn(lambda: self._release(call), f"call-release:{call.sid[-6:]}")
            return
        call.caller_notice_pending = notice is not None
        call.log.info("ending: %s%s", reason, f" ({detail})" if detail else "")
        self._spawn(
            lambda: self._teardown(call, notice, notify_agent), f"call-teardown:{call.sid[-6:]}"
        )

    def _teardown(self, call: Call, notice: PromptName | None, notify_agent: bool) -> None:
        try:
            self._end_everywhere(call, notice, notify_agent)
        except Exception:  # thread boundary: never leave the registry holding a dead call
            call.log.exception("teardown failed")
        finally:
            self._forget(call, publish_end=True)

    def _end_everywhere(self, call: Call, notice: PromptName | None, notify_agent: bool) -> None:
        for session in list(call.sessions.values()):
            session.close()
        shared = self._quietly_redis(lambda: self.registry.load(call.sid))
        others: set[str] = set()
        if shared is not None:
            others = {shared.home, shared.caller_owner or "", shared.agent_owner or ""}
            others -= {"", self.instance}
            with call.lock:
                call.caller_live = shared.caller_live
                call.agent_live = shared.agent_live
                call.agent_answered = call.agent_answered or shared.agent_answered
                if call.agent_sid is None and shared.agent_sid is not None:
                    call.agent_sid = shared.agent_sid
        for other in others:
            self._quietly_redis(partial(self.registry.tell, other, "ending", call.sid))
        with call.lock:
            caller_live, agent_sid = call.caller_live, call.agent_sid
            agent_live, agent_answered = call.agent_live, call.agent_answered
        if caller_live:
            if notice is not None:
                self._wait_caller_stream(call, shared)
            self._end_leg(call, call.sid, call.caller_language, notice, answered=True)
            call.caller_notice_pending = False
        if agent_sid is not None and agent_live:
            agent_notice = notice if notify_agent and agent_answered else None
            self._end_leg(call, agent_sid, call.agent_language, agent_notice, agent_answered)
        for other in others:
            self._quietly_redis(partial(self.registry.tell, other, "ended", call.sid))
        self._close_parts(call)

    def _wait_caller_stream(self, call: Call, shared: SharedCall | None) -> None:
        """Ended while Twilio may still be fetching or saying the greeting: a redirect now
        could race our own TwiML. Once the caller's stream starts (anywhere), it has run."""
        if call.caller_stream_seen.is_set() or (shared is not None and shared.caller_stream_seen):
            return
        deadline = time.monotonic() + CALLER_TWIML_WAIT_S
        while time.monotonic() < deadline:
            found = self._quietly_redis(lambda: self.registry.load(call.sid))
            if found is None or found.caller_stream_seen or call.caller_stream_seen.is_set():
                return
            time.sleep(0.1)

    def _release(self, call: Call) -> None:
        """Another instance ends this call: close our parts once it has said its notices."""
        try:
            for session in list(call.sessions.values()):
                session.close()
            self._ended_signal(call.sid).wait(RELEASE_WAIT_S)
            self._close_parts(call)
        except Exception:  # thread boundary
            call.log.exception("release failed")
        finally:
            self._forget(call, publish_end=False)

    def _close_parts(self, call: Call) -> None:
        for leg in call.legs.values():
            leg.close()
        deadline = time.monotonic() + SESSION_JOIN_S
        for session in list(call.sessions.values()):
            join = getattr(session, "join", None)
            if join is not None:
                join(max(0.0, deadline - time.monotonic()))

    def _forget(self, call: Call, *, publish_end: bool) -> None:
        with self._lock:
            held = False
            for sid in (call.sid, call.agent_sid):
                if sid is not None and self._by_sid.get(sid) is call:
                    del self._by_sid[sid]
                    held = True
            readers = [self._readers.pop((call.sid, r), None) for r in ("caller", "agent")]
            self._ended_signals.pop(call.sid, None)
        for reader in readers:
            if reader is not None:
                reader.stop()
        self._sender.forget(call.sid)
        call.flush_transcript()
        if held:
            self._metrics.active_calls.dec()
        if not publish_end:
            # Ended by another instance, which records the end: this one's live view (the API,
            # the console) must still learn the call is over, with the claimer's reason.
            reason = self._quietly_redis(lambda: self.registry.end_reason(call.sid))
            reason = reason or call.end_reason or "unknown"
            self.hub.publish(CallEnded(call.sid, _utcnow(), reason, "", elsewhere=True))
        else:
            self.hub.publish(
                CallEnded(call.sid, _utcnow(), call.end_reason or "unknown", call.end_detail)
            )
            self._metrics.calls_ended.labels(call.end_reason or "unknown").inc()
            call.log.info(
                "ended (%s) after %.1f s", call.end_reason, time.monotonic() - call.started_at
            )

    # -- what the upkeep (bridge/cluster_upkeep.py) calls -----------------------------------

    def let_go(self, call: Call) -> None:
        # The claimer's record says why it ended (and the live view hears its reason, from
        # Redis); this replica's reason is only a placeholder, never recorded.
        if call.mark_ended("caller_hung_up"):
            self._spawn(lambda: self._release(call), f"call-release:{call.sid[-6:]}")

    def ended_elsewhere(self, sid: str) -> None:
        self._ended_signal(sid).set()

    def lost(self, call: Call, detail: str) -> None:
        self.end(call, "instance_lost", notice="instance_lost", notify_agent=True, detail=detail)

    def _ended_signal(self, sid: str) -> threading.Event:
        with self._lock:
            return self._ended_signals.setdefault(sid, threading.Event())

    def live_calls(self, sids: Sequence[str]) -> set[str] | None:
        """Which of these calls are in progress on any instance (None: Redis cannot say)."""
        return self._quietly_redis(lambda: self.registry.live(sids))

    # -- shutdown ---------------------------------------------------------------------------

    def finish_shutdown(self, timeout: float) -> None:
        super().finish_shutdown(timeout)
        self._upkeep.stop()
        self._quietly_redis(self.registry.leave)

    # -- helpers ----------------------------------------------------------------------------

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
        call = self._new_call(
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

    def _unregister(self, call: Call) -> None:
        with self._lock:
            if self._by_sid.get(call.sid) is call:
                del self._by_sid[call.sid]

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        self._start_teardown(threading.Thread(target=target, name=name, daemon=True))

    @staticmethod
    def _quietly_redis(action: Callable[[], T]) -> T | None:
        try:
            return action()
        except redis.RedisError as exc:
            log.warning("cluster: Redis call failed: %s", exc)
            return None
