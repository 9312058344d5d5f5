"""What the parties hear: the original voice under the translation, and no echo loops.

The translation stand-in turns speech into a tone naming the output language (en 440 Hz for
the agent, es 660 Hz for the caller), so what reaches each ear can be measured by frequency.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.call_helpers import (
    BRIDGE_NUMBER,
    CALLER_NUMBER,
    Stack,
    agent_of,
    bridge_stack,
    new_sessions,
    started_at,
    tone_ulaw,
    wait_call_over,
    wait_streaming,
)
from tests.fakes.audio import AGENT_EN_8K_MULAW, load_wav, ulaw_silence, ulaw_to_pcm16
from tests.fakes.openai_translate import FakeTranslationServer, ToneTranslator, tone_for
from tests.fakes.twilio import DialBehaviour, FakeCall

# Audio levels through a whole call: run one at a time (`make test`), so the CPU keeps real time.
pytestmark = [pytest.mark.slow, pytest.mark.realtime]


def band_db(call: FakeCall, freq_hz: float, start: float, end: float) -> float:
    """Level (dBFS) of what ``call`` heard near ``freq_hz`` in frames arriving in [start, end)."""
    chunks = [f.data for f in call.heard_frames if start <= f.time < end]
    if not chunks:
        return -120.0
    samples = ulaw_to_pcm16(b"".join(chunks)).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / 8000)
    band = spectrum[(freqs > freq_hz - 25) & (freqs < freq_hz + 25)]
    power = float(np.sum(band**2)) / (len(samples) * np.sum(np.hanning(len(samples)) ** 2))
    return float(10 * np.log10(max(power * 2 / 32768**2, 1e-12)))


def rms_db(samples: np.ndarray) -> float:
    return 20 * float(np.log10(max(np.sqrt(np.mean(samples.astype(np.float64) ** 2)), 1e-9)))


def echo_call(stack: Stack) -> dict[str, float]:
    """The caller speaks first; the agent's phone echoes what it hears (-6 dB, 100 ms late);
    later the agent really speaks. Returns 660 Hz levels the caller heard in each phase."""
    assert stack.openai is not None
    before = len(stack.openai.sessions)
    agent_speech = load_wav(AGENT_EN_8K_MULAW)[2]
    stack.twilio.default_dial = DialBehaviour(
        audio=ulaw_silence(8000 * 6) + agent_speech, echo_gain=0.5, echo_delay_s=0.1
    )
    caller_audio = ulaw_silence(4000) + tone_ulaw(3.0) + ulaw_silence(8000 * 20)
    caller = stack.twilio.place_call(caller_audio, from_=CALLER_NUMBER, to=BRIDGE_NUMBER)
    agent = agent_of(stack.twilio, caller)
    wait_streaming(stack.twilio, caller, agent)
    new_sessions(stack.openai, before)
    t0 = started_at(agent)
    time.sleep(max(0.0, t0 + 6.0 + len(agent_speech) / 8000 + 1.0 - time.monotonic()))
    levels = {
        # While the agent only hears (and echoes) the caller's translation: 1-5.5 s.
        "echo_phase": band_db(caller, tone_for("es"), t0 + 1.0, t0 + 5.5),
        # While the agent genuinely speaks: 6.5 s on.
        "speech_phase": band_db(caller, tone_for("es"), t0 + 6.5, t0 + 6.0 + 7.0),
        "agent_heard_translation": band_db(agent, tone_for("en"), t0 + 1.0, t0 + 3.5),
    }
    caller.hangup()
    wait_call_over(stack.bridge)
    return levels


def test_echo_guard_stops_the_loop_and_keeps_real_speech(
    tmp_path_factory: pytest.TempPathFactory,
    openai_fake: FakeTranslationServer,
    record_property: object,
) -> None:
    results: dict[str, dict[str, float]] = {}
    for guard in ("-30", "off"):
        with bridge_stack(
            tmp_path_factory.mktemp(f"echo{guard}"), {"ECHO_GUARD_DB": guard}, openai_fake
        ) as stack:
            results[guard] = echo_call(stack)
    on, off = results["-30"], results["off"]
    summary = (
        f"re-translated echo reaching the caller: {on['echo_phase']:.1f} dBFS with the guard, "
        f"{off['echo_phase']:.1f} dBFS without; the agent's real speech: "
        f"{on['speech_phase']:.1f} / {off['speech_phase']:.1f} dBFS"
    )
    print(f"\n{summary}")
    record_property("echo", summary)  # type: ignore[operator]
    assert on["agent_heard_translation"] > -30, "the agent must hear the translation"
    assert off["echo_phase"] > -35, "without the guard the echo is re-translated (the loop)"
    assert on["echo_phase"] < off["echo_phase"] - 30, "the guard must stop the loop"
    assert on["speech_phase"] > -35, "the agent's genuine speech still reaches the caller"
    assert abs(on["speech_phase"] - off["speech_phase"]) < 3


def test_untranslated_speech_reaches_the_listener_under_passthrough(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The model stays silent (e.g. speech already in the listener's language): the listener
    still hears the speaker, at PASSTHROUGH_DB."""
    silent_model = ToneTranslator(rms_threshold=1e9)
    with (
        FakeTranslationServer(script=silent_model) as openai,
        bridge_stack(tmp_path_factory.mktemp("pt"), {"PASSTHROUGH_DB": "-14"}, openai) as stack,
    ):
        agent_speech = load_wav(AGENT_EN_8K_MULAW)[2]
        stack.twilio.default_dial = DialBehaviour(audio=ulaw_silence(8000) + agent_speech)
        caller = stack.twilio.place_call(
            ulaw_silence(8000 * 12), from_=CALLER_NUMBER, to=BRIDGE_NUMBER
        )
        agent = agent_of(stack.twilio, caller)
        wait_streaming(stack.twilio, caller, agent)
        time.sleep(1.0 + len(agent_speech) / 8000 + 0.5)
        heard = ulaw_to_pcm16(caller.heard_ulaw())
        spoken = ulaw_to_pcm16(agent_speech)
        level = rms_db(heard) - rms_db(spoken)
        # The caller heard the whole utterance (plus line silence), 14 dB down.
        assert len(heard) >= len(spoken)
        loud = heard[np.abs(heard) > 0]
        assert abs(rms_db(loud) - rms_db(spoken[np.abs(spoken) > 0]) + 14.0) < 2.0, level
        assert np.abs(heard).max() < 32767  # nothing clipped
        caller.hangup()
        wait_call_over(stack.bridge)
