"""One Bland translation session: created over REST, its single-use socket, ended with DELETE.

A :class:`BlandLink` is owned by one :class:`~bridge.engines.bland.engine.BlandTranslationSession`,
whose writer thread alone calls :meth:`open` and :meth:`send` (the socket's one writer).
The link's reader thread hands translated audio and transcripts to the listener as they come
(Bland delivers per utterance: a burst of audio after each sentence, often faster than real
time). Bland does not reconnect a dropped socket (the session ends with it), so a link that
drops is DEAD for good and the owner creates a new one.

Ending (:meth:`finish`) runs on its own thread, because it waits for the last utterance's
output, then DELETEs the session (which also releases its concurrency slot at Bland) and closes
the socket; the owner's writer must not stall on that while a new link takes the audio.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from bridge.audio.pcm import Pcm16, ulaw_to_pcm16
from bridge.engines.bland import wire
from bridge.engines.contract import EngineUnavailable, SessionListener
from bridge.ops.logs import CallLogger

REST_TIMEOUT_S = 10.0
OPEN_TIMEOUT_S = 10.0
# A μ-law utterance of a minute is ~640 KiB in base64 JSON; Bland sends it in pieces anyway.
MAX_SERVER_MESSAGE_BYTES = 4 * 1024 * 1024
# Ending: wait for the answer to the last utterance, at most this long, before DELETE. Bland
# answers an utterance only after it ends, so speech sent since the last transcript means an
# answer is still coming.
FINISH_WAIT_S = 5.0
# No message for this long (and no answer owed or mid-delivery) counts as "nothing more coming".
FINISH_IDLE_S = 0.6
VOICE_RMS = 400.0  # ~ -38 dBFS: below speech, above a phone line's noise floor


class LinkState(enum.Enum):
    OPENING = "opening"
    UP = "up"
    FINISHING = "finishing"
    DEAD = "dead"  # dropped or ended by Bland: the owner needs a new session
    CLOSED = "closed"


class BlandRest:
    """Bland's session endpoints. Stateless: safe from any thread."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": api_key, "Content-Type": "application/json"}

    def create(self, request: wire.CreateSession) -> wire.CreatedSession:
        try:
            response = requests.post(
                self._base + wire.SESSIONS_PATH,
                json=request.to_json(),
                headers=self._headers,
                timeout=REST_TIMEOUT_S,
            )
        except requests.RequestException as exc:
            raise EngineUnavailable(f"Bland unreachable: {type(exc).__name__}") from exc
        body = _json(response)
        if response.status_code >= 300:
            detail = wire.error_summary(body)
            raise EngineUnavailable(
                f"Bland refused the session: HTTP {response.status_code} ({detail})"
            )
        try:
            return wire.parse_created(body)
        except wire.BlandProtocolError as exc:
            raise EngineUnavailable(f"Bland create answer unusable: {exc}") from exc

    def end(self, session_id: str, reason: str) -> int | None:
        """DELETE the session (a no-op at Bland if it already ended); the HTTP status."""
        try:
            response = requests.delete(
                f"{self._base}{wire.SESSIONS_PATH}/{session_id}",
                json=wire.end_body(reason),
                headers=self._headers,
                timeout=REST_TIMEOUT_S,
            )
        except requests.RequestException:
            return None
        return response.status_code


class BlandLink:
    def __init__(
        self,
        rest: BlandRest,
        request: wire.CreateSession,
        *,
        listener: SessionListener,
        on_change: Callable[[], None],
        log: CallLogger,
        name: str,
        call_sid: str,
        release: Callable[[], None],
    ) -> None:
        self._rest = rest
        self._request = request
        self._listener = listener
        self._on_change = on_change
        self._log = log
        self.name = name
        self._call_sid = call_sid
        self._release = release  # gives the concurrency slot back, once
        self.state = LinkState.OPENING
        self.dead_reason = ""
        self.opened_at = 0.0
        self.life_s = float(request.max_duration_s)
        self._session_id: str | None = None
        self._conn: ClientConnection | None = None
        self._lock = threading.Lock()
        self._stream_sid = "MZ" + name.encode().hex()[:32].ljust(32, "0")
        self._sequence = 0
        self._sent_bytes = 0
        self._last_message_at = 0.0
        self._voice_sent_at = 0.0  # the last frame of speech sent
        self._answered_at = 0.0  # the last transcript received
        self._utterance_open = False  # an answer began and its tts_complete has not come
        self._reader: threading.Thread | None = None
        self._ender: threading.Thread | None = None

    # -- the owner's writer thread ----------------------------------------------------------

    def open(self) -> None:
        """Create the session and connect; raises :class:`EngineUnavailable` (slot released)."""
        started = time.monotonic()
        try:
            created = self._rest.create(self._request)
        except EngineUnavailable:
            self._end_now("create failed")
            raise
        self._session_id = created.session_id
        self.life_s = float(min(created.max_duration_s, self._request.max_duration_s))
        try:
            # ws_url is opaque, single-use and carries the session's auth: used as given, once,
            # and never logged.
            conn = connect(
                created.ws_url,
                open_timeout=OPEN_TIMEOUT_S,
                max_size=MAX_SERVER_MESSAGE_BYTES,
                compression=None,
                proxy=None,
            )
            self._conn = conn
            self._send_text(wire.connected_message())
            self._send_text(wire.start_message(self._stream_sid, self._call_sid))
        except Exception as exc:  # any failure to connect means "unavailable"
            self._end_now("connect failed")
            raise EngineUnavailable(f"Bland socket could not open: {type(exc).__name__}") from exc
        self.opened_at = time.monotonic()
        self._last_message_at = self.opened_at
        self.state = LinkState.UP
        self._log.info(
            "Bland session %s (%s) open in %.0f ms (%s -> %s)",
            self.name,
            created.session_id,
            1000 * (self.opened_at - started),
            self._request.source_language,
            self._request.target_language,
        )
        self._reader = threading.Thread(
            target=self._run_reader, args=(conn,), name=f"bland-reader:{self.name}", daemon=True
        )
        self._reader.start()

    def send(self, ulaw: bytes) -> bool:
        """One media frame; False (nothing sent) when the link is not up or the write failed."""
        if self.state is not LinkState.UP:
            return False
        message = wire.media_message(
            self._stream_sid, self._sequence + 1, self._sequence, self._sent_bytes // 8, ulaw
        )
        try:
            self._send_text(message)
        except Exception as exc:  # noqa: BLE001 - the socket dropped; the reader says how
            self._mark_dead(f"send failed: {type(exc).__name__}")
            return False
        self._sent_bytes += len(ulaw)
        if is_voiced(ulaw_to_pcm16(ulaw)):
            self._voice_sent_at = time.monotonic()
        return True

    @property
    def answer_owed(self) -> bool:
        """Speech was sent that Bland has not answered yet (or is still answering)."""
        return self._utterance_open or self._voice_sent_at > self._answered_at

    def finish(self, reason: str = "call_ended") -> None:
        """End in the background: wait for the last output, DELETE, close. Idempotent."""
        with self._lock:
            if self._ender is not None:
                return
            was = self.state
            if was is LinkState.UP:
                self.state = LinkState.FINISHING
            self._ender = threading.Thread(
                target=self._end,
                args=(reason, was is LinkState.UP),
                daemon=True,
                name=f"bland-end:{self.name}",
            )
        self._ender.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in (self._ender, self._reader):
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    # -- ending -----------------------------------------------------------------------------

    def _end(self, reason: str, was_up: bool) -> None:
        if was_up:
            try:
                self._send_text(
                    wire.stop_message(self._stream_sid, self._sequence + 1, self._call_sid)
                )
            except Exception:  # noqa: BLE001 - already gone: nothing left to flush
                self._log.debug("Bland stop not sent", exc_info=True)
            deadline = time.monotonic() + FINISH_WAIT_S
            while time.monotonic() < deadline and self.state is LinkState.FINISHING:
                idle = time.monotonic() - self._last_message_at
                if idle >= FINISH_IDLE_S and not self.answer_owed:
                    break
                time.sleep(0.05)
        self._end_now(reason)

    def _end_now(self, reason: str) -> None:
        """DELETE (ends it at Bland, frees its slot), close the socket, release our slot."""
        session_id, self._session_id = self._session_id, None
        if session_id is not None:
            status = self._rest.end(session_id, reason)
            if status is None or status >= 300:
                self._log.warning("Bland DELETE %s answered %s", session_id, status)
        self._close_socket()
        with self._lock:
            if self.state is not LinkState.DEAD:
                self.state = LinkState.CLOSED
            release, self._release = self._release, _nothing
        release()

    # -- reader thread ----------------------------------------------------------------------

    def _run_reader(self, conn: ClientConnection) -> None:
        reason = "Bland closed the socket"
        try:
            for message in conn:
                self._last_message_at = time.monotonic()
                if not self._dispatch(message):
                    reason = "Bland ended the session"
                    break
        except ConnectionClosed as exc:
            reason = f"Bland socket lost: {type(exc).__name__}"
        except Exception as exc:  # noqa: BLE001 - thread boundary: this link is over
            self._log.exception("Bland reader failed")
            reason = f"Bland reader failed: {type(exc).__name__}"
        finally:
            self._mark_dead(reason)

    def _dispatch(self, message: str | bytes) -> bool:
        """Hand one frame on; False once Bland said the session is over."""
        received_at = time.monotonic()
        try:
            event = wire.parse_server_message(message)
        except wire.BlandProtocolError as exc:
            self._log.warning("ignoring a malformed Bland frame: %s", exc)
            return True
        if isinstance(event, wire.Audio):
            self._utterance_open = True
            if event.ulaw:
                self._listener.on_audio(ulaw_to_pcm16(event.ulaw), received_at)
        elif isinstance(event, wire.Transcript):
            self._answered_at = received_at
            self._utterance_open = True
            # Whole utterances, not deltas: a trailing space keeps consecutive ones apart.
            if event.original:
                self._listener.on_text("source", event.original + " ")
            if event.translation:
                self._listener.on_text("translation", event.translation + " ")
        elif isinstance(event, wire.TtsComplete):
            self._utterance_open = False
        elif isinstance(event, wire.SessionEnded):
            self._log.info("Bland ended session %s: %s", self.name, event.reason or "no reason")
            return False
        elif isinstance(event, wire.Error):
            # Bland's errors are not documented as fatal; a fatal one ends the socket too.
            self._log.warning("Bland error %s: %s", event.code, event.message)
        else:
            self._log.debug("ignoring Bland frame %s", type(event).__name__)
        return True

    # -- shared -----------------------------------------------------------------------------

    def _send_text(self, text: str) -> None:
        conn = self._conn
        if conn is None:
            raise ConnectionError("not connected")
        conn.send(text)

    def _mark_dead(self, reason: str) -> None:
        with self._lock:
            if self.state in (LinkState.UP, LinkState.OPENING):
                self.state = LinkState.DEAD
                self.dead_reason = reason
                lost = True
            else:
                lost = False
                if self.state is LinkState.FINISHING:
                    self.state = LinkState.CLOSED
        if lost:
            self._log.warning("Bland session %s lost: %s", self.name, reason)
        self._on_change()

    def _close_socket(self) -> None:
        conn = self._conn
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken socket may raise; nothing to do
                self._log.debug("closing Bland socket raised", exc_info=True)


def is_voiced(audio: Pcm16) -> bool:
    """Whether ``audio`` holds speech (Bland will answer it) rather than line noise."""
    samples = audio.samples
    return (
        bool(len(samples)) and float(np.sqrt(np.mean(samples.astype(np.float32) ** 2))) > VOICE_RMS
    )


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _nothing() -> None:
    pass
