"""One simulated phone call: the party dialled, and everything recorded about the call.

A :class:`SimCall` is what the tests and the simulator observe (status history, what was said,
its streams and what they heard, protocol notes) and what the REST API renders; its
:class:`~bridge.sim.executor.CallExecutor` is the one thread that acts for it. Control from
other threads (hang up, REST updates) goes through the executor, which alone changes the call.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bridge.sim import twiml as tw
from bridge.sim.answers import GatherAnswer
from bridge.sim.executor import STOP_GRACE_S, CallExecutor
from bridge.sim.media import HeardFrame, InboundFilter, MediaStreamClient
from bridge.sim.rest import API_VERSION, rfc2822

Outcome = Literal["answer", "busy", "no-answer", "failed"]


@dataclass(frozen=True, slots=True)
class DialBehaviour:
    """How a dialled party behaves: ring ``answer_delay_s``, then ``outcome``.

    Once answered it speaks ``audio`` (8 kHz μ-law, then line silence), optionally hears itself
    back (``echo_gain`` of what it hears, ``echo_delay_s`` late; or any ``inbound_filter``) and
    hangs up after ``hangup_after_s`` if set; with ``stop_reading_after_s`` its stream stops
    reading the socket then (a wedged peer) while still sending. Each ``<Gather>`` gets the next of
    ``gather_answers`` (None, or none left: silence). With machine detection on, Twilio takes
    ``amd_delay_s`` to decide the party is ``answered_by`` (human, machine_start, fax, …).
    """

    outcome: Outcome = "answer"
    answer_delay_s: float = 0.1
    audio: bytes = b""
    echo_gain: float = 0.0
    echo_delay_s: float = 0.0
    hangup_after_s: float | None = None
    stop_reading_after_s: float | None = None
    inbound_filter: InboundFilter | None = None  # overrides echo_gain when set
    gather_answers: tuple[GatherAnswer | None, ...] = ()
    answered_by: str = "human"
    amd_delay_s: float = 0.5


class Carrier(Protocol):
    """What a call needs from the Twilio stand-in."""

    account_sid: str
    auth_token: str
    max_call_s: float
    say_s_per_char: float
    gather_wait_scale: float

    def post_status(self, call: SimCall, status: str) -> None:
        """Queue a signed status callback for ``call``."""

    def routed(self, kind: str, url: str) -> str:
        """Where a request Twilio signs for ``url`` is really sent (a load balancer's pick)."""

    def post_async(
        self, url: str, method: str, params: Mapping[str, str], kind: str = "callback"
    ) -> None:
        """Queue a signed webhook."""

    def fetch_twiml(
        self, call: SimCall, url: str, method: str, extra: Mapping[str, str] | None = None
    ) -> str | None:
        """Request TwiML from the application (signed), with ``extra`` fields; None on
        failure."""


class SimCall:
    """A call leg. ``said`` lists ``<Say>`` texts, ``says`` the parsed verbs with attributes."""

    def __init__(
        self,
        carrier: Carrier,
        sid: str,
        direction: str,
        from_: str,
        to: str,
        *,
        behaviour: DialBehaviour,
        twiml: str | None = None,
        url: str | None = None,
        status_callback: str | None = None,
        status_callback_method: str = "POST",
        status_callback_events: frozenset[str] = frozenset(),
        label: str = "",
        machine_detection: str | None = None,
        async_amd: bool = False,
        amd_callback: str | None = None,
        amd_callback_method: str = "POST",
    ) -> None:
        self.sid = sid
        self.direction = direction
        self.from_ = from_
        self.to = to
        self.behaviour = behaviour
        self.label = label or sid[-6:]
        self.status_callback = status_callback
        self.status_callback_method = status_callback_method
        self.status_callback_events = status_callback_events
        self.callback_seq = 0
        self.created_at = time.time()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.status_history: list[tuple[str, float]] = [("queued", time.monotonic())]
        self.says: list[tw.Say] = []
        self.twiml_documents: list[str] = []
        self.streams: list[MediaStreamClient] = []
        self.notes: list[str] = []
        self.gathers: list[tw.Gather] = []  # every <Gather> run, in order
        self.gather_results: list[dict[str, str] | None] = []  # what each one posted
        self.answered_by: str | None = None  # AMD's verdict, once reported
        self.machine_detection = machine_detection
        self.async_amd = async_amd
        self.amd_callback = amd_callback
        self.amd_callback_method = amd_callback_method
        self.answered = threading.Event()
        self.ended = threading.Event()
        self.stream_closed_by_server = threading.Event()
        self._carrier = carrier
        self._initial_twiml = twiml
        self._initial_url = url
        self._executor = CallExecutor(self, carrier)

    # -- observation -----------------------------------------------------------------------
    @property
    def status(self) -> str:
        """The current call status (queued … completed)."""
        return self.status_history[-1][0]

    @property
    def initial_twiml(self) -> str | None:
        """The TwiML the call was created with (REST ``Twiml``), executed once answered."""
        return self._initial_twiml

    @property
    def initial_url(self) -> str | None:
        """Where the call's TwiML is fetched from once answered (REST ``Url``)."""
        return self._initial_url

    @property
    def said(self) -> list[str]:
        """Texts of every ``<Say>`` executed on this call."""
        return [say.text for say in self.says]

    @property
    def stream(self) -> MediaStreamClient | None:
        """The latest media stream, if any."""
        return self.streams[-1] if self.streams else None

    @property
    def heard_frames(self) -> list[HeardFrame]:
        """Every media frame the bridge sent to this leg, across its streams."""
        return [frame for stream in list(self.streams) for frame in stream.heard_frames]

    @property
    def marks_sent_back(self) -> list[tuple[str, float]]:
        """Every mark echoed to the bridge (name, monotonic time)."""
        return [mark for stream in list(self.streams) for mark in stream.marks_sent_back]

    @property
    def violations(self) -> list[str]:
        """Protocol problems Twilio would log, from the call and all its streams."""
        return self.notes + [v for stream in list(self.streams) for v in stream.violations]

    def heard_ulaw(self) -> bytes:
        """All μ-law audio the bridge sent to this leg, in order."""
        return b"".join(frame.data for frame in self.heard_frames)

    def wait_ended(self, timeout: float = 5.0) -> bool:
        """Wait until the call has its final status."""
        return self.ended.wait(timeout)

    def resource(self) -> dict[str, Any]:
        """The call as Twilio's REST API renders it."""
        account = self._carrier.account_sid
        uri = f"/{API_VERSION}/Accounts/{account}/Calls/{self.sid}.json"
        return {
            "sid": self.sid,
            "account_sid": account,
            "parent_call_sid": None,
            "date_created": rfc2822(self.created_at),
            "date_updated": rfc2822(time.time()),
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from_,
            "from_formatted": self.from_,
            "phone_number_sid": None,
            "status": self.status,
            "start_time": rfc2822(self.answered_at),
            "end_time": rfc2822(self.ended_at),
            "duration": str(self.duration_s()) if self.ended_at else None,
            "price": None,
            "price_unit": "USD",
            "direction": self.direction,
            "answered_by": self.answered_by,
            "api_version": API_VERSION,
            "forwarded_from": None,
            "group_sid": None,
            "caller_name": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": uri,
            "subresource_uris": {
                name: uri.replace(".json", f"/{name}.json")
                for name in (
                    "notifications",
                    "recordings",
                    "payments",
                    "events",
                    "siprec",
                    "streams",
                    "transcriptions",
                    "user_defined_message_subscriptions",
                    "user_defined_messages",
                )
            },
        }

    def duration_s(self) -> int:
        """Whole seconds from answer to end (rounded up here)."""
        if self.answered_at is None:
            return 0
        return math.ceil((self.ended_at or time.time()) - self.answered_at)

    # -- control (any thread) -----------------------------------------------------------------
    def start(self) -> None:
        """Start the executor thread."""
        self._executor.start()

    def hangup(self) -> None:
        """The party hangs up: its stream gets ``stop`` and closes; the call completes."""
        self._executor.request_end("hangup")

    def request_end(self, api_status: str) -> None:
        """REST ``Status=completed|canceled``; canceled only acts before answer."""
        if api_status == "canceled" and self.answered.is_set():
            return
        self._executor.request_end(f"api-{api_status}")

    def redirect(self, twiml: str | None, url: str | None) -> None:
        """REST ``Twiml=`` / ``Url=``: stop the current verb and run the new document."""
        self._executor.redirect(twiml, url)

    def shutdown(self) -> None:
        """End the call at once (stand-in teardown) and join its threads."""
        self._executor.request_end("shutdown")
        self._executor.join(STOP_GRACE_S + 2.0)
