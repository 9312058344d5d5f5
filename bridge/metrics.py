"""Prometheus metrics for one app instance (its own registry, so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls_started = Counter(
            "bridge_calls_started", "Calls answered by the bridge", registry=r
        )
        self.calls_ended = Counter(
            "bridge_calls_ended", "Calls ended, by reason", ["reason"], registry=r
        )
        self.active_calls = Gauge("bridge_active_calls", "Calls in progress", registry=r)
        self.audio_to_twilio = Histogram(
            "bridge_translated_audio_to_twilio_seconds",
            "From a translated audio chunk arriving to its first/last frame written to Twilio",
            ["edge"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.frames_sent = Counter(
            "bridge_frames_sent", "20 ms frames written to Twilio", ["leg"], registry=r
        )
        self.audio_dropped_seconds = Counter(
            "bridge_audio_dropped_seconds",
            "Audio dropped because a bounded buffer was full",
            ["where"],
            registry=r,
        )
        self.bad_messages = Counter(
            "bridge_bad_media_messages",
            "Media Stream messages refused or ignored",
            ["kind"],
            registry=r,
        )
