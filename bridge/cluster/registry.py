"""The shared call registry in Redis: which calls exist, their legs, and who holds what.

Used only when ``REDIS_URL`` is set (several instances; see docs/scaling.md). Every key has a
TTL, refreshed by a heartbeat of each instance that holds part of the call, so an instance
that dies leaves nothing behind for longer than ``CALL_TTL_S``:

* ``bridge:call:{sid}`` (hash): the call as its home instance admitted it, the agent's
  CallSid, each leg's live/answered flags and which instance holds each leg's socket
  (``caller_owner``, ``agent_owner``), and the streamSid that claimed each leg's one stream
  (``caller_stream``, ``agent_stream``);
* ``bridge:agent:{agent_sid}``: the caller's CallSid, to find a call from its agent leg;
* ``bridge:end:{sid}``: the claim of the call's teardown (``SET NX``), so exactly one
  instance ends a call whoever hears about its end first; it outlives the call for
  ``REMEMBER_ENDED_S`` (a day), so a replayed voice webhook for an ended call is refused;
* ``bridge:instance:{id}``: an instance's liveness, refreshed every ``HEARTBEAT_S``;
* ``bridge:inbox:{id}`` (stream): control messages for one instance (a call is ending, has
  ended), read by that instance's inbox thread.

Concurrency: one ``redis.Redis`` client (a thread-safe connection pool) shared by all threads.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from bridge.calls.book import REMEMBER_ENDED_S

log = logging.getLogger(__name__)
HEARTBEAT_S = 1.0
# An instance whose key is older than this is gone: three missed heartbeats.
INSTANCE_TTL_S = 3
# Calls outlive a missed heartbeat or two, never a dead cluster by much.
CALL_TTL_S = 10
# A claim outlives late callbacks about the call (Twilio retries for a while), and tells a
# replayed voice webhook that its call has ended for as long as a process remembers it itself.
END_CLAIM_TTL_S = REMEMBER_ENDED_S
INBOX_MAXLEN = 10_000
_PREFIX = "bridge:"


def call_key(sid: str) -> str:
    return f"{_PREFIX}call:{sid}"


def agent_key(agent_sid: str) -> str:
    return f"{_PREFIX}agent:{agent_sid}"


def end_key(sid: str) -> str:
    return f"{_PREFIX}end:{sid}"


def instance_key(instance: str) -> str:
    return f"{_PREFIX}instance:{instance}"


def inbox_key(instance: str) -> str:
    return f"{_PREFIX}inbox:{instance}"


def new_instance_id() -> str:
    """Host, process and a random tail: unique even when a PID is reused after a restart."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class SharedCall:
    """A call as the registry holds it (every instance sees the same)."""

    sid: str
    caller_number: str
    dialled_number: str
    caller_language: str
    agent_language: str
    started_wall: float  # time.time() when admitted: monotonic clocks differ between hosts
    home: str
    agent_sid: str | None
    caller_owner: str | None
    agent_owner: str | None
    caller_live: bool
    agent_live: bool
    agent_answered: bool
    caller_stream_seen: bool

    def owner(self, role: str) -> str | None:
        return self.caller_owner if role == "caller" else self.agent_owner

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> SharedCall | None:
        if "sid" not in fields:
            return None  # expired, or only a heartbeat's EXPIRE touched a missing key
        return cls(
            sid=fields["sid"],
            caller_number=fields.get("caller_number", ""),
            dialled_number=fields.get("dialled_number", ""),
            caller_language=fields.get("caller_language", ""),
            agent_language=fields.get("agent_language", ""),
            started_wall=float(fields.get("started_wall", "0") or 0),
            home=fields.get("home", ""),
            agent_sid=fields.get("agent_sid") or None,
            caller_owner=fields.get("caller_owner") or None,
            agent_owner=fields.get("agent_owner") or None,
            caller_live=fields.get("caller_live") == "1",
            agent_live=fields.get("agent_live") == "1",
            agent_answered=fields.get("agent_answered") == "1",
            caller_stream_seen=fields.get("caller_stream_seen") == "1",
        )


class CallRegistry:
    """Typed operations on the registry's keys for one instance (``self.instance``)."""

    def __init__(self, client: redis.Redis, instance: str | None = None) -> None:
        self.client = client
        self.instance = instance or new_instance_id()

    # -- calls ------------------------------------------------------------------------------

    def create(
        self,
        sid: str,
        *,
        caller_number: str,
        dialled_number: str,
        caller_language: str,
        agent_language: str,
    ) -> bool:
        """Admit a call here (this instance is its home); False if another instance did
        (Twilio retried the voice webhook on another instance)."""
        key = call_key(sid)
        pipe = self.client.pipeline(transaction=True)  # never a key without its TTL
        pipe.hsetnx(key, "sid", sid)
        pipe.expire(key, CALL_TTL_S, nx=True)
        created, _ = pipe.execute()
        if not created:
            return False
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(
            key,
            mapping={
                "caller_number": caller_number,
                "dialled_number": dialled_number,
                "caller_language": caller_language,
                "agent_language": agent_language,
                "started_wall": f"{time.time():.3f}",
                "home": self.instance,
                "caller_live": "1",
            },
        )
        pipe.expire(key, CALL_TTL_S)
        pipe.execute()
        return True

    def load(self, sid: str) -> SharedCall | None:
        raw = self.client.hgetall(call_key(sid))
        return SharedCall.from_hash({_text(k): _text(v) for k, v in raw.items()})

    def caller_sid_of(self, sid: str) -> str | None:
        """The caller's CallSid for either leg's CallSid (None: not a call of ours)."""
        if self.client.exists(call_key(sid)):
            return sid
        found = self.client.get(agent_key(sid))
        return None if found is None else _text(found)

    def update(self, sid: str, **fields: str) -> None:
        """Set fields of a call that exists (never re-creates an expired one)."""
        key = call_key(sid)
        pipe = self.client.pipeline(transaction=True)
        pipe.exists(key)
        pipe.hset(key, mapping=cast(Any, fields))  # redis-py's key type is invariant
        exists, _ = pipe.execute()
        if not exists:
            self.client.delete(key)  # HSET made a husk of an expired call: drop it

    def set_once(self, sid: str, field: str) -> bool:
        """Set ``field`` to "1"; True only for the instance that set it first."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hsetnx(call_key(sid), field, "1")
        pipe.expire(call_key(sid), CALL_TTL_S, nx=True)  # an expired call's husk expires too
        first, _ = pipe.execute()
        return bool(first)

    def claim_stream(self, sid: str, role: str, stream_sid: str) -> bool:
        """Claim ``role``'s one stream for ``stream_sid``; False if another stream has (or had)
        it, or the call is gone. Atomic across instances (HSETNX)."""
        key = call_key(sid)
        pipe = self.client.pipeline(transaction=True)
        pipe.exists(key)
        pipe.hsetnx(key, f"{role}_stream", stream_sid)
        exists, claimed = pipe.execute()
        if not exists:
            self.client.delete(key)  # HSETNX made a husk of an expired call: drop it
            return False
        return bool(claimed)

    def set_agent_sid(self, sid: str, agent_sid: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(call_key(sid), mapping={"agent_sid": agent_sid, "agent_live": "1"})
        pipe.expire(call_key(sid), CALL_TTL_S, nx=True)
        pipe.set(agent_key(agent_sid), sid, ex=CALL_TTL_S)
        pipe.execute()

    def refresh(self, sids: list[tuple[str, str | None]], keys: Sequence[str] = ()) -> None:
        """The heartbeat: this instance is alive and still holds these calls (and ``keys``,
        their audio streams)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(instance_key(self.instance), "1", ex=INSTANCE_TTL_S)
        pipe.expire(inbox_key(self.instance), CALL_TTL_S)
        for sid, agent_sid in sids:
            pipe.expire(call_key(sid), CALL_TTL_S)
            if agent_sid is not None:
                pipe.expire(agent_key(agent_sid), CALL_TTL_S)
        for key in keys:
            pipe.expire(key, CALL_TTL_S)
        pipe.execute()

    # -- ends -------------------------------------------------------------------------------

    def erase(self, sid: str, agent_sid: str | None) -> int:
        """Remove an erased call's hash and agent link now rather than at their TTL. Its end
        claim stays (until it expires): it holds only the end reason, and it is what refuses
        a replayed webhook for the call. Returns how many keys were there."""
        keys = [call_key(sid)] + ([agent_key(agent_sid)] if agent_sid else [])
        return int(self.client.delete(*keys))

    def claim_end(self, sid: str, reason: str) -> bool:
        """True exactly once per call, cluster-wide: the caller of it runs the teardown."""
        return bool(self.client.set(end_key(sid), reason, nx=True, ex=END_CLAIM_TTL_S))

    def ended(self, sid: str) -> bool:
        return bool(self.client.exists(end_key(sid)))

    def end_reason(self, sid: str) -> str | None:
        """Why the call ended, as its claimer said (None: not ended, or the claim expired)."""
        found = self.client.get(end_key(sid))
        return None if found is None else _text(found)

    def live(self, sids: Sequence[str]) -> set[str]:
        """Which of these calls (caller's CallSids) are in progress anywhere in the cluster:
        still held by some instance (their key expires soon after the last one stops) and not
        ended. One round trip."""
        pipe = self.client.pipeline(transaction=False)
        for sid in sids:
            pipe.exists(call_key(sid))
            pipe.exists(end_key(sid))
        found = pipe.execute()
        return {
            sid
            for sid, held, ended in zip(sids, found[::2], found[1::2], strict=True)
            if held and not ended
        }

    # -- instances --------------------------------------------------------------------------

    def alive(self, instance: str) -> bool:
        return instance == self.instance or bool(self.client.exists(instance_key(instance)))

    def tell(self, instance: str, op: str, sid: str, reason: str = "") -> None:
        """A control message for ``instance``'s inbox."""
        key = inbox_key(instance)
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(
            key, {"op": op, "sid": sid, "reason": reason}, maxlen=INBOX_MAXLEN, approximate=True
        )
        pipe.expire(key, CALL_TTL_S)
        pipe.execute()

    def leave(self) -> None:
        """This instance stops: its peers learn at once instead of after INSTANCE_TTL_S."""
        self.client.delete(instance_key(self.instance), inbox_key(self.instance))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


Entry = tuple[bytes, dict[bytes, bytes]]


def read_stream(
    client: redis.Redis, key: str, last: bytes, count: int, block_ms: int
) -> list[Entry]:
    """``XREAD BLOCK`` on one stream after entry ``last``: its entries (id, fields), typed
    (redis-py's own annotations cannot say what a reply without decoding holds)."""
    reply = cast(
        "list[tuple[bytes, list[Entry]]] | None",
        client.xread({key: last}, count=count, block=block_ms),
    )
    return [entry for _key, entries in reply or () for entry in entries]
