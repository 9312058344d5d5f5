"""Prometheus metrics for one app instance (its own registry, so tests can build many apps)."""

from __future__ import annotations

import re
import threading
from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        r.register(ThreadCollector())
        self.calls_started = Counter(
            "bridge_calls_started", "Calls answered by the bridge", registry=r
        )
        self.calls_ended = Counter(
            "bridge_calls_ended", "Calls ended, by reason", ["reason"], registry=r
        )
        self.calls_refused = Counter(
            "bridge_calls_refused", "Calls declined at the door, by reason", ["reason"], registry=r
        )
        self.active_calls = Gauge("bridge_active_calls", "Calls in progress", registry=r)
        self.audio_to_twilio = Histogram(
            "bridge_translated_audio_to_twilio_seconds",
            "From a translated audio chunk arriving to its first/last frame written to Twilio",
            ["edge"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.translation_delay = Histogram(
            "bridge_translation_delay_seconds",
            "Speech onset to the first translated audio the listener heard (mark echoes)",
            ["direction"],
            buckets=(0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0),
            registry=r,
        )
        self.frames_received = Counter(
            "bridge_frames_received", "Media frames received from Twilio", ["leg"], registry=r
        )
        self.engine_sessions = Counter(
            "bridge_engine_sessions",
            "Translation server sessions by event: opened, reconnected, replaced, failed",
            ["event"],
            registry=r,
        )
        # Several instances (REDIS_URL): translated audio sent by the instance running the
        # session to the one holding the listener's socket, from send to read.
        self.fabric_hop = Histogram(
            "bridge_fabric_hop_seconds",
            "Translated audio's hop through Redis to the instance holding the listener's leg",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.frames_sent = Counter(
            "bridge_frames_sent", "20 ms frames written to Twilio", ["leg"], registry=r
        )
        self.media_write_stalls = Counter(
            "bridge_media_write_stalls",
            "Media Stream legs ended because Twilio stopped taking what we wrote",
            ["leg"],
            registry=r,
        )
        self.audio_dropped_seconds = Counter(
            "bridge_audio_dropped_seconds",
            "Audio dropped because a bounded buffer was full",
            ["where"],
            registry=r,
        )
        self.echo_guarded_seconds = Counter(
            "bridge_echo_guarded_seconds",
            "Microphone audio attenuated because our translation may be echoing in it",
            ["leg"],
            registry=r,
        )
        self.bad_messages = Counter(
            "bridge_bad_media_messages",
            "Media Stream messages refused or ignored",
            ["kind"],
            registry=r,
        )


_NUMBERED = re.compile(r"[-_]?\d+(_\d+)?$")


def thread_kind(name: str) -> str:
    """Group a thread name: ours are ``kind:call``; library threads ``Thread-N (target)``."""
    if ":" in name:
        return name.split(":", 1)[0]
    if name.endswith(")") and "(" in name:
        return name[name.rindex("(") + 1 : -1]
    return _NUMBERED.sub("", name) or name


class ThreadCollector(Collector):
    """``bridge_threads{kind}``: live threads by kind, so a leak shows as a kind that grows."""

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("bridge_threads", "Live threads by kind", labels=["kind"])
        for kind, count in sorted(
            Tally(thread_kind(t.name) for t in threading.enumerate()).items()
        ):
            family.add_metric([kind], count)
        yield family
