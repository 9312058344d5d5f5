"""Audio for a leg whose socket another instance holds, through Redis streams.

Used only with ``REDIS_URL``. The instance holding a speaker's socket runs that speaker's
translation session; what the *listener* must hear (the translation, and the speaker's own
voice for the passthrough) goes to the instance holding the listener's socket:

* :class:`ClusterLeg` is the leg object every instance keeps for both parties of a call it
  knows. Attached here (this instance holds the socket), it plays as a :class:`CallLeg` does;
  not attached here, what it is asked to play is appended to the leg's stream
  ``bridge:audio:{sid}:{role}`` instead.
* :class:`LegReader` runs on the instance that holds the socket: one thread, ``XREAD BLOCK``
  on that stream from its beginning (audio queued before the listener connected is played
  as it would be in one process, bounded by the leg's backlog), into the local leg.

Why streams and not pub/sub (measured in bench/redis_transport.py, see docs/scaling.md):
streams keep what was sent while the listener's stream is still connecting or its reader is
between two reads (pub/sub drops it), are bounded (``MAXLEN ~``) and expire with the call.

Timing: ``received_at`` crosses as wall-clock time (monotonic clocks differ between hosts)
and is turned back into this host's monotonic clock, so the playout's latency figures
include the hop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import redis

from bridge.audio.pcm import ENGINE_RATE_HZ, TWILIO_RATE_HZ, Pcm16, Samples
from bridge.calls.leg import CallLeg, LegConfig, Role
from bridge.cluster.registry import CALL_TTL_S, read_stream
from bridge.ops.metrics import Metrics

log = logging.getLogger(__name__)
# 10 s of 20 ms passthrough frames plus the translation's chunks: more than any playout
# backlog keeps (BACKLOG_MAX_SECONDS ≤ 60 s is about translation, which comes in ~200 ms).
STREAM_MAXLEN = 1000
READ_BLOCK_MS = 500
READ_COUNT = 100
# The other party's voice crosses in 60 ms batches, not 20 ms frames: a third of the messages
# (each costs ~0.3 ms of CPU in redis-py at both ends; bench/redis_transport.py), for at most
# 40 ms more delay on a sound mixed 26 dB under the translation, which itself comes ~1 s late.
PASSTHROUGH_BATCH_S = 0.06
KIND_TRANSLATION = b"t"
KIND_PASSTHROUGH = b"p"


def audio_key(sid: str, role: Role) -> str:
    return f"bridge:audio:{sid}:{role}"


class LegSender:
    """Appends a leg's audio to its stream (any thread)."""

    def __init__(self, client: redis.Redis, metrics: Metrics) -> None:
        self._client = client
        self._metrics = metrics
        self._with_ttl: set[str] = set()
        self._lock = threading.Lock()

    def send(self, sid: str, role: Role, kind: bytes, audio: Pcm16, at_wall: float) -> None:
        key = audio_key(sid, role)
        fields: dict[bytes, bytes] = {
            b"k": kind,
            b"r": str(audio.rate_hz).encode(),
            b"t": f"{at_wall:.6f}".encode(),
            b"a": audio.samples.astype("<i2").tobytes(),
        }
        with self._lock:
            first = key not in self._with_ttl
            self._with_ttl.add(key)
        try:
            if first:
                # The first append creates the key: give it a TTL at once (the heartbeat
                # refreshes it), so a crash right now leaves no stream behind.
                pipe = self._client.pipeline(transaction=False)
                pipe.xadd(key, fields, maxlen=STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
                pipe.expire(key, CALL_TTL_S)
                pipe.execute()
            else:
                self._client.xadd(key, fields, maxlen=STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
        except redis.RedisError as exc:
            # The audio path never raises: a lost chunk is a gap, counted like a dropped one.
            self._metrics.audio_dropped_seconds.labels("fabric").inc(
                len(audio.samples) / audio.rate_hz
            )
            log.warning("call=%s %s: audio not sent across instances: %s", sid, role, exc)

    def forget(self, sid: str) -> None:
        with self._lock:
            self._with_ttl = {k for k in self._with_ttl if f":{sid}:" not in k}


class ClusterLeg(CallLeg):
    """A party's leg as one instance sees it: played here if its socket is here, else sent."""

    def __init__(
        self,
        call_sid: str,
        role: Role,
        metrics: Metrics,
        config: LegConfig | None,
        sender: LegSender,
    ) -> None:
        super().__init__(call_sid, role, metrics, config)
        self._call_sid = call_sid
        self._sender = sender
        self._batch: list[Samples] = []  # passthrough waiting to cross (the speaker's thread)
        self._batched = 0

    def play(self, audio: Pcm16, received_at: float) -> None:
        if self._closing:
            return
        if self.attached:
            super().play(audio, received_at)
            return
        at_wall = time.time() - (time.monotonic() - received_at)
        if audio.rate_hz == ENGINE_RATE_HZ:
            # Down to what Twilio plays before crossing: a third of the bytes. This leg's own
            # resampler does it (unused here otherwise), so its state runs on across chunks.
            with self._resample_lock:
                audio = Pcm16(self._downsampler.process(audio.samples), TWILIO_RATE_HZ)
        self._sender.send(self._call_sid, self.role, KIND_TRANSLATION, audio, at_wall)

    def hear_other_party(self, audio: Pcm16) -> None:
        if self._closing:
            return
        if self.attached:
            super().hear_other_party(audio)
            return
        # Called from the speaker's stream thread only, so the batch needs no lock.
        self._batch.append(audio.samples)
        self._batched += len(audio.samples)
        if self._batched < PASSTHROUGH_BATCH_S * audio.rate_hz:
            return
        batch = Pcm16(np.concatenate(self._batch), audio.rate_hz)
        self._batch, self._batched = [], 0
        self._sender.send(self._call_sid, self.role, KIND_PASSTHROUGH, batch, time.time())

    def play_here(self, audio: Pcm16, received_at: float) -> None:
        """Audio that came through the stream: always to this instance's socket."""
        super().play(audio, received_at)

    def hear_here(self, audio: Pcm16) -> None:
        super().hear_other_party(audio)


class LegReader:
    """The thread that feeds a leg held here from its stream, until :meth:`stop`."""

    def __init__(
        self,
        client: redis.Redis,
        sid: str,
        leg: ClusterLeg,
        on_hop: Callable[[float], None] | None = None,
    ) -> None:
        self._client = client
        self._key = audio_key(sid, leg.role)
        self._leg = leg
        self._on_hop = on_hop
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"leg-reader:{sid[-6:]}-{leg.role}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 0.0) -> None:
        self._stop.set()
        if timeout and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        last = b"0"  # from the start: audio sent before this leg connected is still due
        # What waited for this leg to connect is not a hop's latency: only later reads count.
        live = False
        while not self._stop.is_set():
            try:
                got = read_stream(self._client, self._key, last, READ_COUNT, READ_BLOCK_MS)
            except redis.RedisError as exc:
                log.warning("%s: reading failed (%s); retrying", self._key, exc)
                self._stop.wait(0.5)
                continue
            except Exception:  # thread boundary: a bad entry must not kill the whole leg
                log.exception("%s: reader failed", self._key)
                return
            for entry_id, fields in got:
                last = entry_id
                self._deliver(fields, live)
            live = True

    def _deliver(self, fields: dict[bytes, bytes], live: bool) -> None:
        samples = np.frombuffer(fields[b"a"], dtype="<i2").astype(np.int16)
        audio = Pcm16(samples, int(fields[b"r"]))
        sent_wall = float(fields[b"t"])
        hop = max(0.0, time.time() - sent_wall)
        if fields[b"k"] == KIND_TRANSLATION:
            if live and self._on_hop is not None:
                self._on_hop(hop)
            self._leg.play_here(audio, time.monotonic() - hop)
        else:
            self._leg.hear_here(audio)
