"""An instance's upkeep in the cluster: its heartbeat, the watch on its peers, its inbox.

Two threads per instance (bridge/cluster/book.py starts them with the app):

* ``cluster-heartbeat``, every ``HEARTBEAT_S``: refreshes this instance's liveness key and the
  TTLs of every call it holds part of (so they expire soon after it dies), then looks at the
  instances holding the *other* parts of those calls. One whose key expired is gone: the call
  ends as ``instance_lost`` (the party still here hears the notice). A call that ended while
  its message to us was lost is let go of here too.
* ``cluster-inbox``: ``XREAD BLOCK`` on this instance's inbox stream, where the instance that
  ends a call says ``ending`` (close your sessions) and ``ended`` (close your sockets).
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

import redis

from bridge.calls.call import Call
from bridge.calls.leg import Role
from bridge.cluster.fabric import audio_key
from bridge.cluster.registry import HEARTBEAT_S, CallRegistry, inbox_key, read_stream

log = logging.getLogger(__name__)
INBOX_BLOCK_MS = 500
INBOX_COUNT = 100
ROLES: tuple[Role, ...] = ("caller", "agent")


class Instance(Protocol):
    """What the upkeep needs of the instance's call control."""

    registry: CallRegistry

    def active_calls(self) -> list[Call]: ...

    def find(self, call_sid: str) -> Call | None: ...

    def let_go(self, call: Call) -> None:
        """The call was ended by another instance: close this instance's parts of it."""

    def ended_elsewhere(self, sid: str) -> None:
        """The instance ending the call has said its notices: sockets may close."""

    def lost(self, call: Call, detail: str) -> None:
        """A peer holding part of ``call`` is gone: end it as ``instance_lost``."""


class ClusterUpkeep:
    def __init__(self, instance: Instance, client: redis.Redis) -> None:
        self._instance = instance
        self._registry = instance.registry
        self._client = client
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._beat, name="cluster-heartbeat", daemon=True),
            threading.Thread(target=self._read_inbox, name="cluster-inbox", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()

    # -- the heartbeat and the watch --------------------------------------------------------

    def _beat(self) -> None:
        warned = False
        while not self._stopping.wait(HEARTBEAT_S):
            calls = self._instance.active_calls()
            try:
                keys = [audio_key(c.sid, r) for c in calls for r in ROLES]
                self._registry.refresh([(c.sid, c.agent_sid) for c in calls], keys)
                for call in calls:
                    self._check_peers(call)
                warned = False
            except redis.RedisError as exc:
                if not warned:
                    log.error("cluster: Redis unreachable (%s); calls go on, unwatched", exc)
                    warned = True
            except Exception:  # thread boundary: the heartbeat must outlive one bad call
                log.exception("cluster heartbeat failed")

    def _check_peers(self, call: Call) -> None:
        """A peer holding the other leg of a call held here stopped beating: it is gone."""
        if call.ended.is_set():
            return
        shared = self._registry.load(call.sid)
        if shared is None or self._registry.ended(call.sid):
            # Ended elsewhere and its messages never reached us: let go of our parts.
            self._instance.ended_elsewhere(call.sid)
            self._instance.let_go(call)
            return
        for role in ROLES:
            owner = shared.owner(role)
            if owner is not None and not self._registry.alive(owner):
                self._instance.lost(call, f"the instance holding the {role} leg ({owner}) stopped")
                return
        if shared.agent_sid is None and not self._registry.alive(shared.home):
            # The home died while dialling: nobody will ever learn the agent's CallSid.
            self._instance.lost(call, f"the instance dialling the agent ({shared.home}) stopped")

    # -- the inbox --------------------------------------------------------------------------

    def _read_inbox(self) -> None:
        key = inbox_key(self._registry.instance)
        last = b"0"
        while not self._stopping.is_set():
            try:
                got = read_stream(self._client, key, last, INBOX_COUNT, INBOX_BLOCK_MS)
            except redis.RedisError:
                self._stopping.wait(0.5)
                continue
            for entry_id, fields in got:
                last = entry_id
                try:
                    self._on_message(fields)
                except Exception:  # thread boundary: one bad message, not the inbox
                    log.exception("cluster: inbox message failed")

    def _on_message(self, fields: dict[bytes, bytes]) -> None:
        op = fields.get(b"op", b"").decode()
        sid = fields.get(b"sid", b"").decode()
        if op == "ended":
            self._instance.ended_elsewhere(sid)
        call = self._instance.find(sid)
        if call is not None and op in ("ending", "ended"):
            self._instance.let_go(call)
