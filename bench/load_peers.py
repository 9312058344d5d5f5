"""The load generator's peers, in asyncio: Twilio (REST, webhooks, Media Streams) and OpenAI.

Everything the bridge talks to during a call, in one event loop of one process (not the
bridge's): the signed voice webhook, the Calls REST API the bridge dials the agent through,
both legs' Media Streams at real-time 20 ms pace, and the translation endpoint, which answers
every append at once with an output delta of the same length. Each peer records monotonic
times (one clock for every process on the machine), so the bridge's added latency can be
measured from outside it:

* Twilio frame in → append sent: the bridge upsamples every 8 kHz frame to exactly 3 × 160
  samples, so an append that brings the session's total to ``S`` samples carries frames up to
  index ``S // 480 - 1``. Its arrival minus that frame's send time is the bridge's own
  processing for that frame; minus the append's *first* frame it also includes the engine's
  intentional 100 ms batching (the raw figure).
* Engine delta in → frame out: deltas carry a loud tone and the legs speak quietly, so a frame
  carrying translation stands out from the ducked passthrough by its level; delta ``k`` starts
  at translated frame ``(samples before it // 3) // 160`` of its listener.
* Utterances: the translation stand-in speaks in turns, ``TALK_APPENDS`` deltas back to back
  then ``PAUSE_APPENDS`` appends answered with nothing, so every utterance's start (which the
  bridge holds back on purpose) and its continuation are both measured, and a frame without
  translation heard inside an utterance is a dropout the bridge inserted (``Session.deltas``
  say which delta began each). With each utterance it sends a source and a translation
  transcript delta, so the bridge's transcript path runs too.

Routing (``--instances``): webhooks and streams go through :class:`Router`, which signs
every request over the public URL and sends it to one of several instance base URLs,
round-robin per request. With one instance both are the same bridge. When calls can span
instances (shared call state, a later issue), pass several: a call's voice webhook, its two
streams and its status callbacks will then land on different instances, which is what that
design must survive.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import secrets
import time
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np
from aiohttp import web
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

from bench.load_stats import Heard

FRAME_S = 0.020
FRAME_SAMPLES_8K = 160
SAMPLES_24K_PER_FRAME = 480
# The legs speak at about -30 dBFS RMS, so their passthrough (-14 dB, ducked to -26 dB under
# translation) stays far below the stand-in's translation tone, which is at -9 dBFS RMS.
SPEECH_RMS = 1000.0
TRANSLATION_AMPLITUDE = 16000.0
TRANSLATION_HZ = 1000.0
TRANSLATED_RMS = 4000.0  # a frame this loud carries translation
TRANSLATION_PATH = "/v1/realtime/translations"
# The stand-in speaks for TALK_APPENDS appends (100 ms each), then is silent for PAUSE_APPENDS:
# longer than the bridge's hold and pacing, so each turn is an utterance of its own.
TALK_APPENDS = 20
PAUSE_APPENDS = 6
# A run this long of μ-law's exact zero (0xFF, or 0x7F for -0) inside a frame is a hole: the
# tone has isolated zero crossings only, and the ducked passthrough under it is never silent.
ZERO_RUN = 16
ZERO_RUNS = (b"\xff" * ZERO_RUN, b"\x7f" * ZERO_RUN)


# Bytes a socket may buffer unsent before send() waits: far more than a stalled peer's whole
# window (a frame is ~300 bytes), so no send waits.
WRITE_LIMIT = 2**24


def media_payload(raw: str | bytes) -> str | None:
    """The payload of a ``media`` message, found without parsing the JSON (the generator's
    main cost per frame at scale); None for any other message, which is parsed in full."""
    if not isinstance(raw, str) or not raw.startswith('{"event":"media"'):
        return None
    at = raw.find('"payload":"')
    if at < 0:
        return None
    at += len('"payload":"')
    return raw[at : raw.index('"', at)]


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


class Router:
    """Public URLs (what Twilio signs) and the instances requests really go to."""

    def __init__(self, public_base: str, instances: list[str], auth_token: str) -> None:
        self.public_base = public_base.rstrip("/")
        self._instances = itertools.cycle([u.rstrip("/") for u in instances])
        self._validator = RequestValidator(auth_token)

    def sign(self, public_url: str, params: dict[str, str]) -> str:
        return str(self._validator.compute_signature(public_url, params))

    def route(self, public_url: str) -> str:
        """The URL to connect to for ``public_url``: same path, next instance."""
        parts = urlsplit(public_url)
        base = urlsplit(next(self._instances))
        scheme = (
            {"http": "ws", "https": "wss"}[base.scheme]
            if parts.scheme in ("ws", "wss")
            else base.scheme
        )
        return f"{scheme}://{base.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")


# -- the legs -------------------------------------------------------------------------------


@dataclass
class Leg:
    """One party's Media Stream: what it sent and what it heard, with times."""

    call_sid: str
    role: str
    stream_sid: str = field(default_factory=lambda: new_sid("MZ"))
    ws: ClientConnection | None = None
    sent_at: list[float] = field(default_factory=list)  # frame index → send time
    late_sends: list[float] = field(default_factory=list)  # send time − due time (generator)
    heard_at: list[float] = field(default_factory=list)  # every media frame received
    heard: Heard = field(default_factory=Heard)  # the same, with what each frame carried
    # For each frame received: how long the simulated Twilio buffer had been empty before it
    # arrived (0 when audio was still queued): silence the listener heard.
    dry_s: list[float] = field(default_factory=list)
    translated_at: list[float] = field(default_factory=list)  # frames carrying translation
    marks: int = 0
    clears: int = 0
    next_due: float = 0.0
    play_end: float = 0.0  # when the simulated Twilio playout buffer runs dry
    done: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None


def speech_frames(seconds: float, seed: int) -> list[str]:
    """Base64 μ-law frames of a quiet, speech-like signal (band-limited noise, syllabic
    envelope), looped by the legs."""
    rng = np.random.default_rng(seed)
    n = int(8000 * seconds)
    noise = np.convolve(rng.standard_normal(n), np.hanning(9), mode="same")
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * np.arange(n) / 8000)
    signal = noise * envelope
    signal *= SPEECH_RMS / np.sqrt(np.mean(signal**2))
    ulaw = audioop.lin2ulaw(np.clip(signal, -32768, 32767).astype("<i2").tobytes(), 2)
    return [
        base64.b64encode(ulaw[i : i + FRAME_SAMPLES_8K]).decode("ascii")
        for i in range(0, len(ulaw) - FRAME_SAMPLES_8K + 1, FRAME_SAMPLES_8K)
    ]


class Carrier:
    """Twilio: places calls, answers the bridge's REST requests, runs every Media Stream."""

    def __init__(self, router: Router, account_sid: str, caller: str, dialled: str) -> None:
        self.router = router
        self.account_sid = account_sid
        self.caller_number, self.dialled_number = caller, dialled
        self.legs: dict[str, Leg] = {}  # by CallSid
        self.agent_of: dict[str, str] = {}  # caller CallSid → agent CallSid
        self.dialled: asyncio.Queue[tuple[str, str]] = asyncio.Queue()  # (agent sid, twiml)
        self.rest_port = 0
        self.streaming = False  # the ticker sends media only once set
        self._frames = {"caller": speech_frames(3.0, 1), "agent": speech_frames(3.0, 2)}
        self._http: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # fire-and-forget, kept from the GC

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Calls.json", self._create)
        app.router.add_post("/2010-04-01/Accounts/{account}/Calls/{sid}.json", self._update)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server) and server.sockets
        self.rest_port = int(server.sockets[0].getsockname()[1])
        self._ticker = asyncio.create_task(self._tick())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- webhooks -----------------------------------------------------------------------------

    async def post(self, path: str, params: dict[str, str]) -> tuple[int, str]:
        assert self._http is not None
        public = self.router.public_base + path if path.startswith("/") else path
        headers = {"X-Twilio-Signature": self.router.sign(public, params)}
        async with self._http.post(self.router.route(public), data=params, headers=headers) as r:
            return r.status, await r.text()

    def _params(self, sid: str, status: str, direction: str) -> dict[str, str]:
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": sid,
            "CallStatus": status,
            "Direction": direction,
            "From": self.caller_number,
            "To": self.dialled_number,
        }

    async def place_call(self) -> tuple[Leg, str]:
        """The voice webhook for a new caller; returns the caller's leg and its TwiML."""
        sid = new_sid("CA")
        status, twiml = await self.post("/twilio/voice", self._params(sid, "ringing", "inbound"))
        if status != 200 or "<Stream" not in twiml:
            raise RuntimeError(f"voice webhook answered {status}: {twiml[:200]}")
        leg = Leg(sid, "caller")
        self.legs[sid] = leg
        return leg, twiml

    # -- REST ---------------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        form = await request.post()
        sid = new_sid("CA")
        twiml = str(form.get("Twiml", ""))
        self.legs[sid] = Leg(sid, "agent")
        self.dialled.put_nowait((sid, twiml))
        callback = str(form.get("StatusCallback", ""))
        if callback:
            self._spawn(self._status_later(callback, sid, "in-progress"))
        return web.json_response(self._resource(sid, "queued", "outbound-api"), status=201)

    async def _status_later(self, url: str, sid: str, status: str) -> None:
        await asyncio.sleep(0.05)
        # The call may be over already; the bridge answers 204 for unknown calls.
        with contextlib.suppress(aiohttp.ClientError):
            await self.post(url, self._params(sid, status, "outbound-api"))

    async def _update(self, request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        await request.post()
        leg = self.legs.get(sid)
        if leg is not None:
            self._spawn(self.hang_up(leg))
        return web.json_response(self._resource(sid, "completed", "outbound-api"))

    def _resource(self, sid: str, status: str, direction: str) -> dict[str, object]:
        return {
            "sid": sid,
            "account_sid": self.account_sid,
            "status": status,
            "direction": direction,
            "to": self.dialled_number,
            "from": self.caller_number,
            "api_version": "2010-04-01",
        }

    # -- Media Streams ------------------------------------------------------------------------

    async def connect(self, leg: Leg, twiml: str) -> None:
        """Open ``leg``'s stream as its TwiML says and send ``connected`` and ``start``."""
        stream = next(e for e in ET.fromstring(twiml).iter("Stream"))
        url = stream.attrib["url"]
        params = {p.attrib["name"]: p.attrib["value"] for p in stream.iter("Parameter")}
        headers = {"X-Twilio-Signature": self.router.sign(url, {})}
        leg.ws = await connect(
            self.router.route(url),
            additional_headers=headers,
            compression=None,
            ping_interval=None,
            max_size=2**20,
            # Twilio never waits for one stream before sending the next's frames: with the
            # default limit one stream the bridge stops reading would block the ticker and make
            # every leg late (the generator, not the bridge, becoming the limit).
            write_limit=WRITE_LIMIT,
        )
        await leg.ws.send(
            json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        )
        start = {
            "streamSid": leg.stream_sid,
            "accountSid": self.account_sid,
            "callSid": leg.call_sid,
            "tracks": ["inbound"],
            "customParameters": params,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        msg = {"event": "start", "sequenceNumber": "1", "start": start, "streamSid": leg.stream_sid}
        await leg.ws.send(json.dumps(msg))
        leg.reader = asyncio.create_task(self._read(leg))

    def begin_media(self, legs: list[Leg], at: float) -> None:
        for leg in legs:
            leg.next_due = at

    async def _tick(self) -> None:
        """One task paces every leg: each sends a frame whenever its 20 ms deadline passes."""
        while True:
            now = time.monotonic()
            soonest = now + 0.005
            for leg in list(self.legs.values()):
                if leg.ws is None or leg.done.is_set() or not leg.next_due:
                    continue
                due = await self._send_due(leg, now)
                now = time.monotonic()
                if due:
                    soonest = min(soonest, due)
            await asyncio.sleep(max(0.0, soonest - time.monotonic()))

    async def _send_due(self, leg: Leg, now: float) -> float:
        """Send every frame of ``leg`` due by ``now``; returns when the next is due (0: none).

        A send can wait (a socket closing waits for the close), and meanwhile the leg may hang
        up (``next_due`` reset) or its socket close: then it stops, or it would spin sending
        frames "due" since time zero into a closed socket."""
        while leg.next_due and leg.next_due <= now and not leg.done.is_set():
            await self._send_frame(leg, now)
            now = time.monotonic()
        return 0.0 if leg.done.is_set() else leg.next_due

    async def _send_frame(self, leg: Leg, now: float) -> None:
        assert leg.ws is not None
        index = len(leg.sent_at)
        frames = self._frames[leg.role]
        ms = index * 20
        text = (
            f'{{"event":"media","sequenceNumber":"{index + 2}","media":{{"track":"inbound",'
            f'"chunk":"{index + 1}","timestamp":"{ms}","payload":"{frames[index % len(frames)]}"}},'
            f'"streamSid":"{leg.stream_sid}"}}'
        )
        leg.late_sends.append(now - leg.next_due)
        leg.next_due += FRAME_S
        try:
            leg.sent_at.append(time.monotonic())
            await leg.ws.send(text)
        except ConnectionClosed:
            leg.done.set()

    async def _read(self, leg: Leg) -> None:
        assert leg.ws is not None
        loop = asyncio.get_running_loop()
        try:
            async for raw in leg.ws:
                now = time.monotonic()
                payload = media_payload(raw)
                msg: Any = {"event": "media"} if payload is not None else json.loads(raw)
                event = msg.get("event")
                if payload is not None:
                    ulaw = base64.b64decode(payload)
                    leg.heard_at.append(now)
                    leg.dry_s.append(max(0.0, now - leg.play_end))
                    loud = audioop.rms(audioop.ulaw2lin(ulaw, 2), 2) > TRANSLATED_RMS
                    if loud:
                        leg.translated_at.append(now)
                    heard = leg.heard
                    heard.at.append(now)
                    heard.loud.append(loud)
                    heard.holed.append(any(run in ulaw for run in ZERO_RUNS))
                    heard.play_end_before.append(leg.play_end)
                    leg.play_end = max(leg.play_end, now) + len(ulaw) / 8000
                elif event == "mark":
                    # Twilio echoes a mark once the audio queued before it has played.
                    leg.marks += 1
                    name = msg["mark"]["name"]
                    loop.call_at(
                        max(now, leg.play_end) - time.monotonic() + loop.time(),
                        self._echo_mark,
                        leg,
                        name,
                    )
                elif event == "clear":
                    leg.clears += 1
                    leg.play_end = now
        except ConnectionClosed:
            pass
        finally:
            leg.done.set()

    def _echo_mark(self, leg: Leg, name: str) -> None:
        if leg.ws is None or leg.done.is_set():
            return
        msg = {"event": "mark", "streamSid": leg.stream_sid, "mark": {"name": name}}
        self._spawn(self._send_quietly(leg, json.dumps(msg)))

    @staticmethod
    async def _send_quietly(leg: Leg, text: str) -> None:
        try:
            assert leg.ws is not None
            await leg.ws.send(text)
        except ConnectionClosed:
            leg.done.set()

    async def hang_up(self, leg: Leg) -> None:
        """The party hangs up: ``stop``, then the socket closes."""
        if leg.ws is None or leg.done.is_set():
            leg.done.set()
            return
        leg.next_due = 0.0
        stop = {"event": "stop", "streamSid": leg.stream_sid, "stop": {"callSid": leg.call_sid}}
        try:
            await leg.ws.send(json.dumps(stop))
            await leg.ws.close()
        except ConnectionClosed:
            pass
        leg.done.set()


# -- the translation endpoint ---------------------------------------------------------------


@dataclass
class Session:
    """One translation session as the stand-in saw it."""

    language: str | None = None
    appends: list[tuple[float, int]] = field(default_factory=list)  # (time, samples at 24 kHz)
    # (time sent, samples, whether it begins an utterance)
    deltas: list[tuple[float, int, bool]] = field(default_factory=list)

    def speaks(self) -> bool:
        """Whether the append just recorded is answered: turns of TALK_APPENDS, then
        PAUSE_APPENDS of silence."""
        return (len(self.appends) - 1) % (TALK_APPENDS + PAUSE_APPENDS) < TALK_APPENDS

    def sent(self, at: float, samples: int) -> bool:
        """Book a delta sent; returns whether it began an utterance."""
        begins = (len(self.appends) - 1) % (TALK_APPENDS + PAUSE_APPENDS) == 0
        self.deltas.append((at, samples, begins))
        return begins


class Translator:
    """OpenAI's realtime translation endpoint, answering every append at once."""

    def __init__(self) -> None:
        self.sessions: list[Session] = []
        self.configured: asyncio.Queue[Session] = asyncio.Queue()
        self._server: Server | None = None
        self.port = 0
        self._deltas: dict[int, str] = {}

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            compression=None,
            ping_interval=None,
            max_size=2**22,
            write_limit=WRITE_LIMIT,
        )
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _delta(self, samples: int) -> str:
        """The delta event for ``samples`` of translation (a loud tone), built once per size."""
        text = self._deltas.get(samples)
        if text is None:
            t = np.arange(samples) / 24000
            tone = TRANSLATION_AMPLITUDE * np.sin(2 * np.pi * TRANSLATION_HZ * t)
            b64 = base64.b64encode(tone.astype("<i2").tobytes()).decode("ascii")
            text = json.dumps(
                {
                    "type": "session.output_audio.delta",
                    "event_id": "event_load",
                    "delta": b64,
                    "sample_rate": 24000,
                    "channels": 1,
                    "format": "pcm16",
                    "elapsed_ms": 0,
                }
            )
            self._deltas[samples] = text
        return text

    @staticmethod
    def _session_event(kind: str, session_id: str, language: str | None) -> str:
        return json.dumps(
            {
                "type": kind,
                "event_id": new_sid("event_"),
                "session": {
                    "id": session_id,
                    "type": "translation",
                    "model": "gpt-realtime-translate",
                    "expires_at": int(time.time()) + 3600,
                    "audio": {
                        "input": {"transcription": None, "noise_reduction": None},
                        "output": {"language": language},
                    },
                },
            }
        )

    async def _handle(self, ws: ServerConnection) -> None:
        session = Session()
        self.sessions.append(session)
        session_id = new_sid("sess_")
        await ws.send(self._session_event("session.created", session_id, None))
        try:
            async for raw in ws:
                now = time.monotonic()
                event = json.loads(raw)
                kind = event.get("type")
                if kind == "session.input_audio_buffer.append":
                    audio = event["audio"]
                    size = len(audio) * 3 // 4 - audio[-2:].count("=")
                    samples = size // 2
                    session.appends.append((now, samples))
                    if session.speaks():
                        await ws.send(self._delta(samples))
                        if session.sent(time.monotonic(), samples):
                            for text in TRANSCRIPT_EVENTS:
                                await ws.send(text)
                elif kind == "session.update":
                    output = (event.get("session") or {}).get("audio", {}).get("output") or {}
                    first = session.language is None
                    session.language = output.get("language", session.language)
                    await ws.send(
                        self._session_event("session.updated", session_id, session.language)
                    )
                    if first and session.language is not None:
                        self.configured.put_nowait(session)
                elif kind == "session.close":
                    await ws.send(json.dumps({"type": "session.closed", "event_id": "event_c"}))
                    await ws.close()
        except ConnectionClosed:
            pass


# What a turn "said", as the engine reports it: the bridge's transcript path (records, the
# console) runs on it. Fixed text: nothing anyone says is needed here.
TRANSCRIPT_EVENTS = tuple(
    json.dumps({"type": kind, "event_id": "event_t", "delta": "hola ", "elapsed_ms": 0})
    for kind in ("session.input_transcript.delta", "session.output_transcript.delta")
)


def frames_of(samples_24k: int) -> int:
    """Whole 20 ms Twilio frames in ``samples_24k`` samples of 24 kHz audio."""
    return samples_24k // SAMPLES_24K_PER_FRAME


def pairs(items: list[float]) -> Iterator[tuple[float, float]]:
    return itertools.pairwise(items)
