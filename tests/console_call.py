"""A simulated call that reads like one, for the console's end-to-end test and its screenshot.

:class:`DialogueTranslator` is the stand-in's tone translator (same audio, same timing, so
delays are measured as in every call test) whose transcript deltas are a short customer
service exchange instead of "hello hello hello": one word of what was said and one of its
translation per 200 ms speech frame, with a pause between utterances long enough to close
each one's segment, until the script runs out. Any dialogue can be given instead, and an
utterance given as a tuple is sent as exactly those fragments (a number split in two, say).
"""

from __future__ import annotations

import itertools
import threading

from tests.fakes import openai_events as wire
from tests.fakes.openai_session import FakeSession
from tests.fakes.openai_translate import ToneTranslator

# Speech frames without words between utterances: 1.8 s between fragments, past the bridge's
# 1.5 s segment gap (bridge/calls/transcript.py).
PAUSE_FRAMES = 8
# What was said or its translation: a string goes out a word per frame; a tuple, as those
# fragments (one per frame, spacing as given).
Text = str | tuple[str, ...]
Dialogue = dict[str, tuple[tuple[Text, Text], ...]]
# Keyed by the session's output language: each utterance as (what was said, its translation).
# Short enough to fit the speech fixtures (38 speech frames for the caller, 30 for the agent).
DIALOGUE: Dialogue = {
    "en": (  # the Spanish-speaking caller, translated for the English-speaking agent
        ("Hola, buenos días.", "Hello, good morning."),
        (
            "Llamo por la factura de marzo: me cobraron dos veces el mismo servicio.",
            "I'm calling about the March bill: I was charged twice for the same service.",
        ),
    ),
    "es": (  # the agent, translated for the caller
        ("Thanks for calling.", "Gracias por llamar."),
        (
            "Let me check your account: yes, I can see the double charge.",
            "Déjeme revisar su cuenta: sí, veo el cargo doble.",
        ),
    ),
}
Frame = tuple[str | None, str | None]  # the words said and translated in one speech frame


def fragments(text: Text) -> list[str]:
    return list(text) if isinstance(text, tuple) else [word + " " for word in text.split()]


def schedule(utterances: tuple[tuple[Text, Text], ...]) -> list[Frame]:
    frames: list[Frame] = []
    for said, translated in utterances:
        frames += itertools.zip_longest(fragments(said), fragments(translated))
        frames += [(None, None)] * PAUSE_FRAMES
    return frames


class DialogueTranslator(ToneTranslator):
    def __init__(self, dialogue: Dialogue | None = None) -> None:
        super().__init__()
        self._dialogue = DIALOGUE if dialogue is None else dialogue
        self._lock = threading.Lock()
        self._frames_seen: dict[int, int] = {}  # per session: speech frames so far

    def on_frame(self, session: FakeSession, index: int, frame: bytes) -> None:
        if not self.is_speech(frame):
            return
        elapsed_ms = self.send_tone(session, index)
        with self._lock:
            n = self._frames_seen.get(id(session), 0)
            self._frames_seen[id(session)] = n + 1
        frames = schedule(self._dialogue.get(session.output_language or "", ()))
        said, translated = frames[n] if n < len(frames) else (None, None)
        if translated is not None:
            self._say(session, "session.output_transcript.delta", translated, elapsed_ms)
        # As the real model: no source text unless transcription was asked for.
        if said is not None and session.transcription_model is not None:
            self._say(session, "session.input_transcript.delta", said, elapsed_ms)

    def _say(self, session: FakeSession, event_type: str, text: str, elapsed_ms: int) -> None:
        session.send(wire.transcript_delta(event_type, text, elapsed_ms), self.delay_s)
