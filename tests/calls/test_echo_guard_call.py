"""A whole call through the bridge with a speakerphone agent: the echo guard, end to end.

The translation stand-in answers the caller's speech with speech (the demo's Spanish caller,
200 ms of it per 200 ms of speech heard), the agent's phone echoes everything it hears 6 dB
down and 60 ms late (issue 12's speakerphone), and later the agent talks over the translation.
What the agent -> caller translation session receives is what the guard let through.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.call_helpers import (
    BRIDGE_NUMBER,
    CALLER_NUMBER,
    agent_of,
    bridge_stack,
    new_sessions,
    started_at,
    wait_call_over,
    wait_streaming,
)
from tests.fakes import openai_events as wire
from tests.fakes.audio import (
    AGENT_EN_8K_MULAW,
    CALLER_ES_8K_MULAW,
    CALLER_ES_24K_PCM16,
    load_wav,
    rms,
    ulaw_silence,
    ulaw_to_pcm16,
)
from tests.fakes.openai_session import FRAME_BYTES, FakeSession
from tests.fakes.openai_translate import FakeTranslationServer, TranslationScript
from tests.fakes.twilio import DialBehaviour

# Audio levels through a whole call: run one at a time (`make test`), so the CPU keeps real time.
pytestmark = [pytest.mark.slow, pytest.mark.realtime]

SPEECH_24K = load_wav(CALLER_ES_24K_PCM16)[2]
AGENT_SPEAKS_AT_S = 6.0  # into the agent's stream: the translation is still playing then
FRAME = 160  # 20 ms at 8 kHz


class SpeechTranslator(TranslationScript):
    """Towards the agent (English), each 200 ms of speech becomes the next 200 ms of the demo's
    Spanish caller: real speech for the agent's phone to echo. Towards the caller: silence."""

    def on_frame(self, session: FakeSession, index: int, frame: bytes) -> None:
        if session.output_language != "en" or rms(np.frombuffer(frame, "<i2")) < 300:
            return
        start = session.output_samples * 2 % (len(SPEECH_24K) - FRAME_BYTES)
        chunk = SPEECH_24K[start : start + FRAME_BYTES]
        session.output_samples += FRAME_BYTES // 2
        delta = base64.b64encode(chunk).decode("ascii")
        session.send(wire.output_audio_delta(delta, (index + 1) * 200))


def frame_db(samples: np.ndarray) -> np.ndarray:
    """dBFS of each 20 ms frame."""
    frames = samples[: len(samples) // FRAME * FRAME].reshape(-1, FRAME).astype(np.float64)
    levels: np.ndarray = 20 * np.log10(
        np.maximum(np.sqrt(np.mean(frames**2, axis=1)), 1e-3) / 32768
    )
    return levels


@pytest.mark.parametrize("passthrough_db", ["-14", "off"])
def test_speakerphone_echo_never_reaches_the_engine_and_the_agent_does(
    passthrough_db: str, tmp_path_factory: pytest.TempPathFactory, record_property: object
) -> None:
    """With the passthrough on (100 ms of lead) and off (a second of translation queued at
    Twilio, so what echoes now was sent up to a second ago)."""
    agent_speech = load_wav(AGENT_EN_8K_MULAW)[2]
    with (
        FakeTranslationServer(script=SpeechTranslator()) as openai,
        bridge_stack(
            tmp_path_factory.mktemp("echo-call"), {"PASSTHROUGH_DB": passthrough_db}, openai
        ) as stack,
    ):
        stack.twilio.default_dial = DialBehaviour(
            audio=ulaw_silence(int(8000 * AGENT_SPEAKS_AT_S)) + agent_speech,
            echo_gain=0.5,
            echo_delay_s=0.06,
        )
        caller_audio = (
            ulaw_silence(4000) + load_wav(CALLER_ES_8K_MULAW)[2] + ulaw_silence(8000 * 12)
        )
        caller = stack.twilio.place_call(caller_audio, from_=CALLER_NUMBER, to=BRIDGE_NUMBER)
        agent = agent_of(stack.twilio, caller)
        wait_streaming(stack.twilio, caller, agent)
        sessions = new_sessions(openai, 0)
        to_caller = next(s for s in sessions if s.output_language == "es")
        t0 = started_at(agent)
        # The call plays in real time: wait until the session has had all of the agent's speech.
        needed = 2 * 24000 * (AGENT_SPEAKS_AT_S + len(agent_speech) / 8000 + 0.5)
        assert stack.twilio.wait_for(lambda: len(to_caller.received_audio) >= needed, 60.0)
        assert agent.stream is not None
        heard_db = frame_db(ulaw_to_pcm16(agent.stream.heard_timeline(t0, AGENT_SPEAKS_AT_S)))
        received = np.frombuffer(bytes(to_caller.received_audio), "<i2")[::3]  # 24 -> 8 kHz
        caller.hangup()
        wait_call_over(stack.bridge)
    spoken = ulaw_to_pcm16(agent_speech)
    # Where the agent's speech sits in what the session received (the stream's start and the
    # session's may differ by some frames): the best match of the two.
    corr = np.correlate(
        np.abs(received.astype(np.float64)), np.abs(spoken.astype(np.float64)), "valid"
    )
    onset = int(np.argmax(corr))
    echo_db = frame_db(received[max(0, onset - int(4.5 * 8000)) : onset - 1600])
    got = frame_db(received[onset : onset + len(spoken)])
    want = frame_db(spoken)[: len(got)]
    talking = want > -35
    passed = np.mean(got[talking] > want[talking] - 6)
    summary = (
        f"agent heard the translation at up to {heard_db.max():.1f} dBFS; echo reaching the "
        f"agent -> caller session: loudest 20 ms {echo_db.max():.1f} dBFS; agent's speech "
        f"frames passed: {100 * passed:.0f}%"
    )
    print(f"\n{summary}")
    record_property(f"echo_call_passthrough_{passthrough_db}", summary)  # type: ignore[operator]
    assert np.sum(heard_db > -30) > 50, "the agent heard (and so echoed) the translation"
    assert echo_db.max() < -40, "not one frame of echo reaches the engine"
    assert passed > 0.8, "the agent's own speech, over the echo, reaches the engine"
