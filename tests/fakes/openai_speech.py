"""A local stand-in for OpenAI's speech endpoint, ``POST /v1/audio/speech``, streaming PCM.

Checks what OpenAI checks (``Authorization: Bearer``, a JSON body with ``model``, ``input`` of
at most 4096 characters and ``voice``) and answers like the API: 401/400 with
``{"error": {message, type, param, code}}``, or 200 and the audio as a chunked body while it is
"synthesised". Only ``response_format: "pcm"`` (24 kHz 16-bit mono, no header) is spoken here.

The voice "says" each word of the input as 200 ms of a tone: the language whose word it is in
``tests.fakes.openai_translate.OUTPUT_WORDS`` picks ``tone_for(language)``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from tests.fakes.audio import pcm16_to_bytes, sine
from tests.fakes.openai_translate import OUTPUT_WORDS, tone_for

PATH = "/v1/audio/speech"
RATE_HZ = 24000
WORD_MS = 200
CHUNK_SAMPLES = RATE_HZ // 10  # streamed in 100 ms pieces
MAX_INPUT_CHARS = 4096
_LANGUAGE_OF_WORD = {word.strip(): language for language, word in OUTPUT_WORDS.items()}


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    body: dict[str, Any]
    received_at: float
    first_byte_at: float | None


class FakeSpeechServer:
    """Use as a context manager; ``base_url`` is the SDK's ``base_url``."""

    def __init__(self, *, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.fail_status: int | None = None  # answer every request with this status
        self.first_byte_delay_s = 0.0
        self.requests: list[SpeechRequest] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-speech", daemon=True
        )

    def __enter__(self) -> FakeSpeechServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def snapshot(self) -> list[SpeechRequest]:
        with self._lock:
            return list(self.requests)

    def _record(self, request: SpeechRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test output is not the place for access logs."""

            def do_POST(self) -> None:
                received_at = time.monotonic()
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != PATH:
                    self._error(404, f"Invalid URL (POST {self.path})", None)
                    return
                auth = self.headers.get("Authorization", "")
                key = auth.removeprefix("Bearer ").strip()
                if not auth.startswith("Bearer ") or not key:
                    self._error(401, "You didn't provide an API key.", None)
                    return
                if fake.api_key is not None and key != fake.api_key:
                    self._error(401, "Incorrect API key provided.", "invalid_api_key")
                    return
                if fake.fail_status is not None:
                    self._error(fake.fail_status, "The server had an error.", None)
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._error(400, "We could not parse the JSON body of your request.", None)
                    return
                problem = check_body(body)
                if problem is not None:
                    self._error(400, problem, None)
                    return
                self._stream(body, received_at)

            def _stream(self, body: dict[str, Any], received_at: float) -> None:
                words = str(body["input"]).split()
                language = next(
                    (_LANGUAGE_OF_WORD[w] for w in words if w in _LANGUAGE_OF_WORD), None
                )
                total = max(1, len(words)) * RATE_HZ * WORD_MS // 1000
                audio = sine(tone_for(language), total, RATE_HZ, 8000.0, 0)
                self.send_response(200)
                self.send_header("Content-Type", "audio/pcm")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                time.sleep(fake.first_byte_delay_s)
                first_byte_at: float | None = None
                for start in range(0, total, CHUNK_SAMPLES):
                    data = pcm16_to_bytes(audio[start : start + CHUNK_SAMPLES])
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                    first_byte_at = first_byte_at or time.monotonic()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                fake._record(SpeechRequest(body, received_at, first_byte_at))

            def _error(self, status: int, message: str, code: str | None) -> None:
                payload = json.dumps(
                    {
                        "error": {
                            "message": message,
                            "type": "invalid_request_error",
                            "param": None,
                            "code": code,
                        }
                    }
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler


def check_body(body: object) -> str | None:
    """What the speech endpoint would refuse (400), or None."""
    if not isinstance(body, dict):
        return "The body must be a JSON object."
    for name in ("model", "input", "voice"):
        if name not in body:
            return f"Missing required parameter: '{name}'."
    if not isinstance(body["input"], str) or not body["input"].strip():
        return "Invalid 'input': empty string."
    if len(body["input"]) > MAX_INPUT_CHARS:
        return f"Invalid 'input': string too long (max {MAX_INPUT_CHARS})."
    if body.get("response_format") != "pcm":
        return "The stand-in speaks response_format 'pcm' only."
    return None
