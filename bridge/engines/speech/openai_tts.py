"""Speaking translated text with OpenAI's streaming speech endpoint (``POST /v1/audio/speech``).

``response_format: "pcm"`` is 24 kHz, 16-bit, mono, little-endian, no header: each network read
goes to the listener as it arrives (the leg resamples to 8 kHz). One request per chunk over the
SDK's pooled HTTP connection: nothing to keep alive between chunks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from openai import OpenAI

from bridge.engines.contract import SessionListener
from bridge.engines.speech.base import ChunkSpeaker, SpeechFailed, SpeechTiming
from bridge.ops.logs import CallLogger

TTS_RATE_HZ = 24000  # what response_format "pcm" is documented to be
# Text is at most 4096 characters per request (OpenAI's API reference); a chunk is a sentence.
MAX_INPUT_CHARS = 4096


class OpenAISpeaker(ChunkSpeaker):
    def __init__(
        self,
        client: OpenAI,
        *,
        model: str,
        voice: str,
        listener: SessionListener,
        log: CallLogger,
        name: str,
        on_failure: Callable[[str], None],
        on_fatal: Callable[[str], None],
    ) -> None:
        self._client = client
        self._model = model
        self._voice = voice
        super().__init__(
            listener=listener, log=log, name=name, on_failure=on_failure, on_fatal=on_fatal
        )

    def _speak_one(self, text: str, final_at: float) -> None:
        requested_at = time.monotonic()
        first_audio_at: float | None = None
        carry = b""
        try:
            with self._client.audio.speech.with_streaming_response.create(
                model=self._model,
                voice=self._voice,
                input=text[:MAX_INPUT_CHARS],
                response_format="pcm",
            ) as response:
                for received in response.iter_bytes():
                    if self.stopped:
                        return
                    data = carry + received
                    # A network read may split a sample: keep the odd byte for the next read.
                    usable = len(data) - len(data) % 2
                    carry = data[usable:]
                    if usable:
                        first_audio_at = self._deliver(data[:usable], TTS_RATE_HZ, first_audio_at)
        except Exception as exc:  # the SDK raises many kinds: one line says which
            raise SpeechFailed(describe(exc)) from exc
        if first_audio_at is not None:
            self.timings.append(SpeechTiming(final_at, requested_at, first_audio_at))


def describe(exc: BaseException) -> str:
    """A one-line cause without secrets."""
    status = getattr(exc, "status_code", None)
    if status is not None:
        return f"HTTP {status} from the speech endpoint"
    return f"{type(exc).__name__}: {exc}"
