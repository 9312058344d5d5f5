"""Follow a call's live events on the bridge's admin API and print its transcript as it comes.

``GET /api/calls/<CallSid>/events`` (server-sent events, ``Authorization: Bearer
ADMIN_TOKEN``): a ``snapshot`` of the record, then ``fragment``, ``segment``, ``delay``,
``summary`` and finally ``ended``. The simulator prints each closed segment (a finished
utterance with its translation), keeps the bridge's own delay figures and the end reason.

Concurrency: one daemon thread reads the stream; results are read after :meth:`stop`, which
closes the response so the read ends. The call is unknown to the API (404) until the bridge
answers it (after the language menu, if any), so the thread retries until then.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import requests

logger = logging.getLogger(__name__)

_RETRY_S = 0.2
_CONNECT_TIMEOUT_S = 5.0
_READ_TIMEOUT_S = 30.0  # the API sends a heartbeat every 15 s
ARROWS = {"caller_to_agent": "caller → agent", "agent_to_caller": "agent → caller"}


@dataclass
class TranscriptLog:
    """What the event stream told: the engine, the segments, the bridge's delays, the end."""

    engine: str | None = None
    lines: list[str] = field(default_factory=list)
    delays_ms: dict[str, int] = field(default_factory=dict)
    end_reason: str | None = None
    error: str | None = None


def segment_line(segment: dict[str, Any]) -> str:
    """``[mm:ss] caller → agent: source → translation`` (like the API's transcript.txt)."""
    start_ms = int(segment.get("start_ms") or 0)
    clock = f"[{start_ms // 60000:02d}:{start_ms // 1000 % 60:02d}]"
    direction = ARROWS.get(str(segment.get("direction")), str(segment.get("direction")))
    source = (segment.get("source_text") or "").strip() or "…"
    translation = (segment.get("translated_text") or "").strip() or "…"
    return f"{clock} {direction}: {source} → {translation}"


def sse_events(chunks: Iterator[bytes]) -> Iterator[tuple[str, str]]:
    """``(event, data)`` pairs from a server-sent event byte stream (comments skipped)."""
    buffer = b""
    name, data = "message", ""
    for chunk in chunks:
        buffer += chunk
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            line = raw.decode("utf-8", errors="replace").rstrip("\r")
            if not line:
                if data:
                    yield name, data
                name, data = "message", ""
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()


class LiveTranscript:
    """Prints a call's transcript to ``out`` while the call runs."""

    def __init__(
        self, bridge_url: str, admin_token: str, call_sid: str, out: TextIO, give_up_s: float
    ) -> None:
        self.log = TranscriptLog()
        self._url = f"{bridge_url.rstrip('/')}/api/calls/{call_sid}/events"
        self._headers = {"Authorization": f"Bearer {admin_token}", "Accept": "text/event-stream"}
        self._out = out
        self._give_up_s = give_up_s
        self._seen: set[tuple[Any, Any]] = set()
        self._stop = threading.Event()
        self._ended = threading.Event()
        self._response: requests.Response | None = None
        self._thread = threading.Thread(target=self._run, name="sim-transcript", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait_ended(self, timeout: float) -> bool:
        """True once the stream said ``ended``."""
        return self._ended.wait(timeout)

    def stop(self) -> None:
        """Stop reading (closing the response ends a blocked read) and join the thread."""
        self._stop.set()
        if self._response is not None:
            self._response.close()
        self._thread.join(_CONNECT_TIMEOUT_S)

    def _open(self) -> requests.Response | None:
        deadline = time.monotonic() + self._give_up_s
        while not self._stop.is_set():
            response = requests.get(
                self._url,
                headers=self._headers,
                stream=True,
                timeout=(_CONNECT_TIMEOUT_S, _READ_TIMEOUT_S),
            )
            if response.status_code == 200:
                return response
            response.close()
            if response.status_code != 404 or time.monotonic() > deadline:
                self.log.error = f"live events: HTTP {response.status_code} from {self._url}"
                return None
            self._stop.wait(_RETRY_S)  # 404: the bridge has not answered the call yet
        return None

    def _run(self) -> None:
        deadline = time.monotonic() + self._give_up_s
        try:
            while not self._follow_once() and time.monotonic() < deadline:
                self._stop.wait(_RETRY_S)
        except (requests.RequestException, ValueError, AttributeError) as exc:
            # AttributeError: urllib3 raises it from a read on a response stop() closed.
            if not self._stop.is_set():
                self.log.error = f"live events: {type(exc).__name__}: {exc}"
        finally:
            self._ended.set()

    def _follow_once(self) -> bool:
        """Read one event stream to its end; False when it ended at once for a call whose
        record is still open. The bridge answers from its store when its live view does not
        have the call (yet): just after the call starts, that is a call in progress."""
        response = self._open()
        if response is None:
            return True
        self._response = response
        open_record = False  # the event just before said the call has not ended
        for name, data in sse_events(response.iter_content(chunk_size=None)):
            event = json.loads(data)
            if name == "ended" and open_record:
                response.close()
                return False
            self._on_event(name, event)
            if name == "ended":
                break
            open_record = name == "snapshot" and event.get("ended_at") is None
        return True

    def _on_event(self, name: str, data: dict[str, Any]) -> None:
        if name == "snapshot":
            self.log.engine = data.get("engine")
            for segment in data.get("segments") or []:
                self._segment(segment)
        elif name == "segment":
            self._segment(data)
        elif name == "delay":
            self.log.delays_ms[str(data.get("direction"))] = int(data.get("delay_ms") or 0)
        elif name == "ended":
            self.log.end_reason = str(data.get("reason"))

    def _segment(self, segment: dict[str, Any]) -> None:
        key = (segment.get("direction"), segment.get("seq"))
        if key in self._seen:
            return  # a second snapshot repeats what the first one had
        self._seen.add(key)
        line = segment_line(segment)
        self.log.lines.append(line)
        self._out.write(f"  {line}\n")
        self._out.flush()
