"""The Media Stream WebSocket handler: one instance per Twilio stream (one leg of a call).

Runs in the gunicorn request thread and only *reads* the socket: everything written (pongs and close
replies too) goes through its one write path, which never blocks
(bridge/telephony/stream_socket.py). Until the `start` binds the stream to a leg this thread owns
that path; then the leg's writer thread does, and is the socket's closer. Malformed input is counted
and logged once per socket, never per frame.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from bridge.audio.pcm import TWILIO_RATE_HZ, ulaw_to_pcm16
from bridge.calls.book import StreamRejected
from bridge.calls.call import Call
from bridge.calls.control import CallControl
from bridge.calls.leg import Role
from bridge.ops.metrics import Metrics
from bridge.telephony.media_wire import (
    Connected,
    Dtmf,
    Mark,
    Media,
    MediaProtocolError,
    Start,
    Stop,
    Unknown,
    parse_message,
)
from bridge.telephony.stream_socket import StreamSocket, finish, receive

log = logging.getLogger(__name__)
# Twilio sends `connected` and `start` at once; a socket that has not started by then is not Twilio.
START_TIMEOUT_S = 5.0
# A peer that keeps sending garbage is closed rather than parsed forever.
BAD_MESSAGE_LIMIT = 500
RECEIVE_POLL_S = 1.0
POLICY_VIOLATION = 1008


class MediaStreamHandler:
    def __init__(self, ws: Any, control: CallControl, metrics: Metrics) -> None:
        self._ws = ws
        # Takes the socket over: from here on nothing writes it with a blocking send.
        self._stream = StreamSocket(ws)
        self._control = control
        self._metrics = metrics
        self._call: Call | None = None
        self._role: Role | None = None
        self._stream_sid: str | None = None
        self._complaints: set[str] = set()
        self._bad = 0
        self._violation = False
        self._frames_received: Any = None

    def run(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                raw = receive(self._ws, RECEIVE_POLL_S)
                # Checked on every frame, not only when idle: chatter without a `start` (even
                # well-formed `connected` events) must not hold a thread forever.
                if self._call is None and time.monotonic() > deadline:
                    self._reject(f"no start within {START_TIMEOUT_S:.0f} s")
                    return
                if raw is None:
                    if self._call is not None and self._call.ended.is_set():
                        return
                    continue
                if not self._handle(raw):
                    return
        except Exception as exc:  # thread boundary; ConnectionClosed lands here
            if type(exc).__name__ != "ConnectionClosed":
                log.exception("media stream handler failed")
        finally:
            try:
                self._finish()
            finally:
                finish(self._ws)

    def _handle(self, raw: str | bytes) -> bool:
        """Handle one frame; False when the stream is over."""
        try:
            event = parse_message(raw)
        except MediaProtocolError as exc:
            return self._complain(exc.kind, str(exc))
        if isinstance(event, Media):
            return self._on_media(event)
        if isinstance(event, Start):
            return self._on_start(event)
        if isinstance(event, Mark | Stop | Dtmf) and event.stream_sid != self._stream_sid:
            # Before `start` no streamSid is ours; after it, only our own.
            return self._complain("wrong_stream", f"{type(event).__name__} for another streamSid")
        if isinstance(event, Mark):
            if self._call is not None and self._role is not None:
                self._call.legs[self._role].on_mark(event.name)
        elif isinstance(event, Stop):
            return False
        elif isinstance(event, Connected | Dtmf):
            pass
        elif isinstance(event, Unknown):
            return self._complain("unknown_event", f"unknown event {event.event!r}")
        return True

    def _on_start(self, start: Start) -> bool:
        if self._call is not None:
            return self._complain("duplicate_start", "second start on one stream")
        if (
            start.encoding != "audio/x-mulaw"
            or start.sample_rate_hz != TWILIO_RATE_HZ
            or start.channels != 1
        ):
            self._reject(f"unsupported media format {start.encoding}/{start.sample_rate_hz}")
            return False
        try:
            call, role = self._control.bind_stream(start)
        except StreamRejected as exc:
            self._reject(str(exc))
            return False
        leg = call.legs[role]
        if not leg.attach(self._stream, start.stream_sid):
            self._reject(f"the {role} leg already has a stream")
            return False
        self._call, self._role, self._stream_sid = call, role, start.stream_sid
        call.log.info("%s stream %s started", role, start.stream_sid)
        return True

    def _on_media(self, media: Media) -> bool:
        if self._call is None or self._role is None:
            return self._complain("media_before_start", "media before start")
        if media.stream_sid != self._stream_sid:
            return self._complain("wrong_stream", "media for another streamSid")
        if not media.payload:
            return self._complain("empty_payload", "media with an empty payload")
        # Twilio sends 160 bytes (20 ms); other sizes up to the parser's bound are still audio.
        if self._frames_received is None:
            # The labelled child once per stream: ``labels()`` takes a lock and a lookup.
            self._frames_received = self._metrics.frames_received.labels(self._role)
        self._frames_received.inc()
        self._call.inbound(self._role, ulaw_to_pcm16(media.payload))
        return True

    def _complain(self, kind: str, detail: str) -> bool:
        """Count and ignore a bad message (logged once per kind per socket). Returns False,
        ending the stream, once the socket has sent more than BAD_MESSAGE_LIMIT of them."""
        self._metrics.bad_messages.labels(kind).inc()
        self._bad += 1
        if kind not in self._complaints:
            self._complaints.add(kind)
            sid = self._call.sid if self._call is not None else "?"
            log.warning("call=%s media stream: %s (further ones counted, not logged)", sid, detail)
        if self._bad > BAD_MESSAGE_LIMIT:
            self._reject(f"more than {BAD_MESSAGE_LIMIT} bad messages")
            return False
        return True

    def _reject(self, why: str) -> None:
        self._metrics.bad_messages.labels("rejected_stream").inc()
        log.warning("media stream refused: %s", why)
        if self._call is not None:
            # Bound to a leg: that leg's writer owns the socket and closes it (see _finish).
            self._violation = True
            return
        self._stream.close(reason=POLICY_VIOLATION, message="not a stream of this bridge")

    def _finish(self) -> None:
        call, role = self._call, self._role
        if call is None or role is None:
            return
        if self._violation:
            self._control.end(call, "stream_rejected", detail=f"{role} stream misbehaved")
            call.legs[role].close(close_code=POLICY_VIOLATION)
            return
        if call.legs[role].write_stalled:
            # Twilio's side of the stream is dead but the phone call is not: the party is still
            # live, so the teardown hangs up their call.
            self._control.end(call, "stream_stalled", detail=f"{role} stream stopped reading")
            call.legs[role].close()
            return
        if not call.ended.is_set():
            call.log.info("%s stream ended", role)
        self._control.on_stream_ended(call, role)
        call.legs[role].close()
