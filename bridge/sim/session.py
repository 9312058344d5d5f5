"""One simulated interpreted call against a running bridge, from dial to report.

:class:`Simulator` plays Twilio (``bridge.sim.carrier``): it serves the REST API the bridge
dials the agent through (open it first, so the bridge can be pointed at ``rest_base_url``),
then :meth:`Simulator.run_call` dials the bridge as a caller, answers the language menu if
there is one, lets the agent answer, streams both WAV files in real time on the two Media
Streams, hangs up once both have spoken and the translation has had ``tail_s`` to arrive, and
writes what each party heard, the transcript and the report into ``out_dir``.

Concurrency: the carrier's threads run the calls and streams; this module only waits on them
(polling their state) from the calling thread, plus the transcript reader's own thread.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TextIO

from bridge.audio.pcm import TWILIO_FRAME_BYTES, TWILIO_RATE_HZ, ULAW_SILENCE
from bridge.sim.answers import GatherAnswer
from bridge.sim.call import DialBehaviour, SimCall
from bridge.sim.carrier import TwilioSim
from bridge.sim.report import (
    FRAME_S,
    SILENCE_DBFS,
    DirectionDelay,
    LegStats,
    Report,
    first_heard,
    frame_levels_dbfs,
    speech_onset,
)
from bridge.sim.transcripts import LiveTranscript
from bridge.sim.wav import to_twilio_ulaw, write_ulaw_as_wav

logger = logging.getLogger(__name__)

MENU_ATTEMPTS = 3  # the bridge offers its menu at most three times
_POLL_S = 0.05
_SETUP_TIMEOUT_S = 20.0
_END_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class SimOptions:
    """What to call and with what. ``menu_answer``: keys (``"2"``) or words (``"español"``)."""

    bridge_url: str
    account_sid: str
    auth_token: str
    caller_wav: Path
    agent_wav: Path
    out_dir: Path
    admin_token: str | None = None
    caller_number: str = "+15550001111"
    bridge_number: str = "+15550002222"
    menu_answer: str | None = None
    lead_in_s: float = 1.0
    tail_s: float = 4.0
    max_call_s: float = 120.0
    answer_delay_s: float = 1.0
    rest_host: str = "127.0.0.1"
    rest_port: int = 0


def _silence(seconds: float) -> bytes:
    return bytes([ULAW_SILENCE]) * int(TWILIO_RATE_HZ * seconds)


class SpeechGate:
    """A party's microphone: line silence until :meth:`open`, then their WAV, then silence.

    Used as the stream's inbound filter, so each party starts speaking only once both legs are
    connected (as people do), whatever the bridge's prompts and dialling took. Called from the
    stream's writer thread; ``open`` from the simulator's.
    """

    def __init__(self, audio: bytes) -> None:
        self.audio = audio
        self.first_frame: int | None = None  # stream frame index at which speaking began
        self._open = threading.Event()
        self._position = 0

    def open(self) -> None:
        self._open.set()

    @property
    def finished(self) -> bool:
        return self._position >= len(self.audio)

    def __call__(self, index: int, own: bytes, _heard: bytes) -> bytes:
        if not self._open.is_set() or self.finished:
            return own  # the stream's own audio is line silence here
        if self.first_frame is None:
            self.first_frame = index
        frame = self.audio[self._position : self._position + TWILIO_FRAME_BYTES]
        self._position += TWILIO_FRAME_BYTES
        return frame + own[len(frame) :]


def _streaming(call: SimCall | None) -> bool:
    return call is not None and call.stream is not None and call.stream.started_at is not None


class Simulator:
    """Twilio for one bridge: open it, point the bridge at ``rest_base_url``, run calls."""

    def __init__(self, options: SimOptions, out: TextIO) -> None:
        self.options = options
        self.out = out
        self.caller_audio = _silence(options.lead_in_s) + to_twilio_ulaw(options.caller_wav)
        self.agent_audio = _silence(options.lead_in_s) + to_twilio_ulaw(options.agent_wav)
        self._origin = self._end = 0.0  # the call's span on the monotonic clock, once over
        self.caller_mic = SpeechGate(self.caller_audio)
        self.agent_mic = SpeechGate(self.agent_audio)
        self.twilio = TwilioSim(
            options.account_sid,
            options.auth_token,
            options.bridge_url,
            max_call_s=options.max_call_s,
            rest_host=options.rest_host,
            rest_port=options.rest_port,
        )
        self.twilio.default_dial = DialBehaviour(
            answer_delay_s=options.answer_delay_s, inbound_filter=self.agent_mic
        )

    @property
    def rest_base_url(self) -> str:
        """Set the bridge's ``TWILIO_API_BASE_URL`` to this."""
        return self.twilio.rest_base_url

    def close(self) -> None:
        self.twilio.close()

    def __enter__(self) -> Simulator:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def run_call(self) -> Report:
        """Place the call, let both parties speak, hang up, and write the output folder."""
        opts = self.options
        answers: tuple[GatherAnswer | None, ...] = ()
        if opts.menu_answer:
            answer = (
                GatherAnswer(digits=opts.menu_answer)
                if opts.menu_answer.isdigit()
                else GatherAnswer(speech=opts.menu_answer)
            )
            answers = (answer,) * MENU_ATTEMPTS
        self._say(f"Calling {opts.bridge_url}/twilio/voice from {opts.caller_number} …")
        origin = time.monotonic()
        caller = self.twilio.place_call(
            b"",
            opts.caller_number,
            opts.bridge_number,
            inbound_filter=self.caller_mic,
            gather_answers=answers,
        )
        transcript = self._follow(caller.sid)
        hung_up = self._converse(caller)
        caller.wait_ended(_END_TIMEOUT_S)
        agent = self._agent()
        if agent is not None:
            agent.wait_ended(_END_TIMEOUT_S)
        if transcript is not None:
            transcript.wait_ended(_END_TIMEOUT_S / 2)
            transcript.stop()
        end = time.monotonic()
        report = self._report(caller, agent, origin, end, hung_up=hung_up, transcript=transcript)
        self._write(report, caller, agent, origin, end)
        return report

    def _follow(self, call_sid: str) -> LiveTranscript | None:
        if not self.options.admin_token:
            self._say("No ADMIN_TOKEN: the transcript (from the bridge's admin API) is not shown.")
            return None
        live = LiveTranscript(
            self.options.bridge_url,
            self.options.admin_token,
            call_sid,
            self.out,
            give_up_s=_SETUP_TIMEOUT_S + 10,
        )
        live.start()
        return live

    def _agent(self) -> SimCall | None:
        agents = self.twilio.agent_calls()
        return agents[0] if agents else None

    def _converse(self, caller: SimCall) -> bool:
        """Wait for both legs to stream, both parties to finish, and the tail; then hang up.
        True when the simulator hung up (rather than the bridge ending the call)."""
        opts = self.options
        both_up = self.twilio.wait_for(
            lambda: caller.ended.is_set() or (_streaming(caller) and _streaming(self._agent())),
            _SETUP_TIMEOUT_S,
            _POLL_S,
        )
        if caller.gathers:
            self._say(f"Language menu heard {len(caller.gathers)} time(s).")
        if caller.ended.is_set():
            self._say("The call ended before the simulator hung up.")
            return False
        if not both_up:
            self._say(f"Both legs were not streaming after {_SETUP_TIMEOUT_S:.0f} s; hanging up.")
            caller.hangup()
            return True
        self.caller_mic.open()
        self.agent_mic.open()
        agent = self._agent()
        if agent is not None:
            self._say(f"Agent dialled at {agent.to} ({agent.sid}); both parties speaking …")
        budget = opts.max_call_s
        done = self.twilio.wait_for(
            lambda: caller.ended.is_set() or (self.caller_mic.finished and self.agent_mic.finished),
            budget,
            _POLL_S,
        )
        if done:
            caller.ended.wait(opts.tail_s)  # translation still arriving; the bridge may end it
        if caller.ended.is_set():
            self._say("The call ended before the simulator hung up.")
            return False
        self._say("Caller hangs up.")
        caller.hangup()
        return True

    def _leg(self, party: str, call: SimCall | None) -> LegStats:
        if call is None:
            return LegStats(party)
        streams = list(call.streams)
        return LegStats(
            party,
            call_sid=call.sid,
            final_status=call.status,
            prompts=call.said,
            frames_sent=sum(s.media_sent for s in streams),
            frames_received=sum(len(s.heard_frames) for s in streams),
            seconds_received=sum(len(s.heard_ulaw()) for s in streams) / TWILIO_RATE_HZ,
            marks_received=sum(len(s.marks_received) for s in streams),
            marks_echoed=sum(len(s.marks_sent_back) for s in streams),
            clears=sum(len(s.clears) for s in streams),
            violations=call.violations,
        )

    def heard(self, call: SimCall | None, origin: float, end: float) -> bytes:
        """What ``call``'s party heard from ``origin`` to ``end``, silence where nothing
        played (every stream of the call laid on one timeline)."""
        n = round((end - origin) * TWILIO_RATE_HZ)
        timeline = bytearray([ULAW_SILENCE]) * n
        for stream in list(call.streams) if call is not None else []:
            window = stream.heard_timeline(origin, end - origin)
            for i in range(0, n, TWILIO_FRAME_BYTES):
                frame = window[i : i + TWILIO_FRAME_BYTES]
                if frame.strip(bytes([ULAW_SILENCE])):
                    timeline[i : i + len(frame)] = frame
        return bytes(timeline)

    def _delay(
        self, direction: str, speaker: SimCall | None, mic: SpeechGate, listener: SimCall | None
    ) -> DirectionDelay:
        result = DirectionDelay(direction)
        stream = speaker.stream if speaker is not None else None
        levels = frame_levels_dbfs(mic.audio)
        onset = speech_onset(levels)
        result.connected = stream is not None and stream.started_at is not None
        if stream is None or stream.started_at is None or onset is None or mic.first_frame is None:
            return result
        # On the speaker's own frame grid (frames leave at the stream's start + index × 20 ms,
        # anchored, see bridge.sim.media): what the listener heard, frame by frame, beside what
        # the speaker sent in the same 20 ms.
        start = stream.started_at
        heard = frame_levels_dbfs(self.heard(listener, start, self._end))
        spoken = [SILENCE_DBFS] * len(heard)
        first = mic.first_frame
        for k, level in enumerate(levels[: max(0, len(spoken) - first)]):
            spoken[first + k] = level
        result.onset_s = start - self._origin + (first + onset) * FRAME_S
        index = first_heard(heard, spoken, first + onset)
        if index is not None:
            result.heard_s = start - self._origin + index * FRAME_S
            result.delay_ms = round((index - first - onset) * FRAME_S * 1000)
        return result

    def _report(
        self,
        caller: SimCall,
        agent: SimCall | None,
        origin: float,
        end: float,
        *,
        hung_up: bool,
        transcript: LiveTranscript | None,
    ) -> Report:
        legs = [self._leg("caller", caller), self._leg("agent", agent)]
        log = transcript.log if transcript is not None else None
        report = Report(
            bridge_url=self.options.bridge_url,
            outcome="",
            ok=False,
            engine=log.engine if log else None,
            end_reason=log.end_reason if log else None,
            menu_answer=self.options.menu_answer if caller.gathers else None,
            duration_s=end - origin,
            legs=legs,
            transcript=list(log.lines) if log else [],
        )
        self._origin, self._end = origin, end
        speakers: list[tuple[str, SimCall | None, SpeechGate, SimCall | None]] = [
            ("caller_to_agent", caller, self.caller_mic, agent),
            ("agent_to_caller", agent, self.agent_mic, caller),
        ]
        for direction, speaker, mic, listener in speakers:
            delay = self._delay(direction, speaker, mic, listener)
            if log is not None:
                delay.bridge_delay_ms = log.delays_ms.get(direction)
            report.delays.append(delay)
        report.outcome, report.ok = _outcome(caller, agent, hung_up, report)
        if log is None:
            report.notes.append("no ADMIN_TOKEN given: no transcript, engine or end reason")
        elif log.error:
            report.notes.append(log.error)
        elif not log.lines and log.engine == "relay":
            report.notes.append("no transcript: the relay engine passes audio, it translates none")
        elif not log.lines:
            report.notes.append("the bridge reported no transcript for this call")
        return report

    def _write(
        self, report: Report, caller: SimCall, agent: SimCall | None, origin: float, end: float
    ) -> None:
        out_dir = self.options.out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        write_ulaw_as_wav(out_dir / "caller_heard.wav", self.heard(caller, origin, end))
        write_ulaw_as_wav(out_dir / "agent_heard.wav", self.heard(agent, origin, end))
        (out_dir / "transcript.txt").write_text(
            "\n".join(report.transcript) + "\n" if report.transcript else "(no transcript)\n"
        )
        (out_dir / "report.txt").write_text(report.to_text())
        (out_dir / "report.json").write_text(report.to_json_text())


def _outcome(
    caller: SimCall, agent: SimCall | None, hung_up: bool, report: Report
) -> tuple[str, bool]:
    """A one-line verdict, and whether the whole telephony path worked."""
    failed = [n for n in caller.notes if n.startswith("11200")]
    if failed:
        return f"the voice webhook failed: {failed[0]}", False
    if not caller.streams:
        said = " / ".join(caller.said) or "nothing"
        return f"the caller was never connected (heard: {said})", False
    if agent is None:
        return "the bridge never dialled the agent", False
    if not agent.streams:
        return f"the agent's call ended without a Media Stream ({agent.status})", False
    heard_both = all(d.delay_ms is not None for d in report.delays)
    if not hung_up:
        return "the bridge ended the call before the caller hung up", False
    if report.violations:
        return "completed, with protocol violations", False
    if not heard_both:
        return "completed, but a party heard nothing of the other", False
    return "completed: both parties heard each other, the caller hung up", True
