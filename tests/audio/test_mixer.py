"""The mixer's arithmetic: levels, saturation, ramps, and telling an echo from a voice."""

from __future__ import annotations

import numpy as np

from bridge.audio.mixer import db_to_gain, echo_likeness, mix, rms, scale
from tests.fakes.audio import AGENT_EN_8K_MULAW, CALLER_ES_8K_MULAW, load_wav, ulaw_to_pcm16


def speech(path: object, start: int, n: int) -> np.ndarray:
    return ulaw_to_pcm16(load_wav(path)[2])[start : start + n]  # type: ignore[arg-type]


def test_levels_and_saturation() -> None:
    assert abs(20 * np.log10(db_to_gain(-14.0)) + 14.0) < 1e-9
    loud = np.full(160, 30000, dtype=np.int16)
    assert mix(loud, loud, 1.0, 1.0).max() == 32767
    assert mix(-loud, -loud, 1.0, 1.0).min() == -32768
    assert scale(loud, 2.0).max() == 32767
    assert np.array_equal(mix(loud, None, 0.5, 0.5), loud)


def test_gain_ramps_across_the_frame_without_a_step() -> None:
    ones = np.full(160, 10000, dtype=np.int16)
    out = mix(None, ones, 1.0, 0.0).astype(int)
    assert out[0] == 10000 and out[-1] < 100
    assert np.max(np.abs(np.diff(out))) <= 63  # 10000 / 160 per sample: a ramp, not a click


def test_ducked_level_on_speech() -> None:
    voice = speech(AGENT_EN_8K_MULAW, 8000, 1600)
    for db in (-14.0, -26.0):
        out = np.concatenate(
            [
                mix(None, voice[i : i + 160], db_to_gain(db), db_to_gain(db))
                for i in range(0, 1600, 160)
            ]
        )
        assert abs(20 * np.log10(rms(out) / rms(voice)) - db) < 0.1


def test_echo_of_speech_is_recognised_whatever_its_level() -> None:
    played = speech(CALLER_ES_8K_MULAW, 8000, 8000)  # the last second sent to the agent
    for gain, lag in ((0.5, 300), (0.05, 6000), (0.02, 1200)):  # lags inside speech
        echo = (played[lag : lag + 1600] * gain).astype(np.int16)
        assert echo_likeness(echo, played) > 0.95


def test_another_voice_is_not_an_echo() -> None:
    played = speech(CALLER_ES_8K_MULAW, 8000, 8000)
    voice = speech(AGENT_EN_8K_MULAW, 12000, 1600)
    assert echo_likeness(voice, played) < 0.4
    # Talking over the echo: the mixture is far less like the played audio than the echo is.
    echo = (played[1000:2600] * 0.3).astype(np.int16)
    both = (echo.astype(np.int32) + voice).clip(-32768, 32767).astype(np.int16)
    assert echo_likeness(both, played) < 0.5
    assert echo_likeness(np.zeros(1600, dtype=np.int16), played) == 0.0
