"""One Socket.IO connection to GPT Translator, carrying one translation session.

A :class:`GptTranslatorLink` is owned by one
:class:`~bridge.engines.gpt_translator.engine.GptTranslatorSession`, whose writer thread is the only
caller of :meth:`open`, :meth:`send`, :meth:`finish` and :meth:`join`: only it emits, and engineio's
own write loop is the socket's single writer. Server events are handled on the connection's
:class:`~bridge.engines.gpt_translator.sio_client.SerialDispatcher` thread, in arrival order; they
hand audio and text to the listener and change :attr:`state`, never write.

A link is never reconnected: a dropped connection makes it ``DEAD`` and the owner opens a new
link, which sends ``translation_start`` again on a new server session (the old one is gone
with its socket: billing is per session, and nothing documents resuming one).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from bridge.audio.pcm import Pcm16
from bridge.engines.contract import EngineUnavailable, SessionListener
from bridge.engines.gpt_translator import wire
from bridge.engines.gpt_translator.sio_client import SerialDispatcher, ordered_client
from bridge.ops.logs import CallLogger

CONNECT_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 10.0  # translation_start → ready_for_audio
# After translation_stop the server finalises billing and confirms with translation_closed;
# output still in flight arrives meanwhile.
STOP_WAIT_S = 3.0
_LIBRARY_LOG = logging.getLogger("bridge.gpt_translator.socketio")


class OutOfCredit(EngineUnavailable):
    """The account's token balance is exhausted (``insufficient_tokens``)."""


class LinkState(enum.Enum):
    OPENING = "opening"
    UP = "up"  # ready_for_audio seen: audio may be sent
    FINISHING = "finishing"  # translation_stop sent
    DEAD = "dead"  # lost without being asked to stop: the owner opens another link
    CLOSED = "closed"


class GptTranslatorLink:
    def __init__(
        self,
        endpoint: wire.Endpoint,
        api_key: str,
        *,
        target_language: str,
        listener: SessionListener,
        on_change: Callable[[], None],
        log: CallLogger,
        name: str,
    ) -> None:
        self._endpoint = endpoint
        self._api_key = api_key
        self._target = target_language
        self._listener = listener
        self._on_change = on_change
        self._log = log
        self.name = name
        self.state = LinkState.OPENING
        self.dead_reason = ""
        self.opened_at = 0.0  # time.monotonic() when ready_for_audio came
        # When a send first failed: the connection was gone from then on, though the client
        # may take seconds to report the disconnect (how long the link really lived).
        self.failing_since = 0.0
        # Set when insufficient_tokens arrived: the session is over and no new one will start.
        self.out_of_credit: wire.InsufficientTokens | None = None
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._ended = threading.Event()  # translation_closed or disconnected
        self._failure = ""  # why opening stopped early (translation_error, refusal)
        self._dispatcher = SerialDispatcher(f"gptt-events:{name}")
        # Keep the library quiet below WARNING: at INFO it logs packets (audio) and the URL (key).
        if _LIBRARY_LOG.level == logging.NOTSET:
            _LIBRARY_LOG.setLevel(logging.WARNING)
        self._sio: Any = ordered_client(
            self._dispatcher, request_timeout_s=CONNECT_TIMEOUT_S, library_logger=_LIBRARY_LOG
        )
        ns = endpoint.namespace
        for event in wire.SERVER_EVENTS:
            self._sio.on(event, self._handler(event), namespace=ns)
        self._sio.on("connect_error", self._on_connect_error, namespace=ns)
        self._sio.on("*", self._on_other_event, namespace=ns)
        self._sio.on("disconnect", self._on_disconnect, namespace=ns)

    # -- the owner's writer thread ----------------------------------------------------------

    def open(self) -> None:
        """Connect, start the session and wait for ``ready_for_audio``.

        Raises :class:`OutOfCredit` for ``insufficient_tokens`` and
        :class:`EngineUnavailable` for anything else that stops the session opening.
        """
        started = time.monotonic()
        try:
            self._sio.connect(
                self._endpoint.connect_url(self._api_key),
                namespaces=[self._endpoint.namespace],
                transports=list(wire.TRANSPORTS),
                wait_timeout=CONNECT_TIMEOUT_S,
            )
        except Exception as exc:  # any failure to connect means "unavailable"
            self._give_up()
            cause = self._failure or type(exc).__name__
            # Never str(exc) alone: a transport error could quote the URL, which holds the key.
            raise EngineUnavailable(
                f"GPT Translator connection refused or failed: {cause}"
            ) from exc
        try:
            self._emit(wire.TRANSLATION_START, wire.start_payload(self._target))
        except Exception as exc:  # the connection went between connect and start
            self._give_up()
            raise EngineUnavailable(
                f"GPT Translator session could not start: {type(exc).__name__}"
            ) from exc
        ready = self._ready.wait(READY_TIMEOUT_S)
        if self.out_of_credit is not None:
            self._give_up()
            raise OutOfCredit(describe_out_of_credit(self.out_of_credit))
        if not ready or self.state is not LinkState.UP:
            self._give_up()
            cause = self._failure or self.dead_reason or "no ready_for_audio in time"
            raise EngineUnavailable(f"GPT Translator session did not start: {cause}")
        self.opened_at = time.monotonic()
        self._log.info(
            "GPT Translator session %s ready in %.0f ms (target %s)",
            self.name,
            1000 * (time.monotonic() - started),
            self._target,
        )

    def send(self, pcm24: bytes) -> bool:
        """Emit one ``audio_chunk``; False (nothing sent) when the session cannot take it."""
        if self.state is not LinkState.UP:
            return False
        try:
            self._emit(wire.AUDIO_CHUNK, wire.audio_chunk_payload(pcm24))
        except Exception as exc:  # noqa: BLE001 - the socket went; the disconnect event says how
            if not self.failing_since:  # once per link: the owner retries until it is DEAD
                self.failing_since = time.monotonic()
                self._log.info("audio_chunk not sent (%s); holding audio", type(exc).__name__)
            return False
        return True

    def finish(self) -> None:
        """Send ``translation_stop`` once (if the session is up); :meth:`join` then waits for
        ``translation_closed`` and disconnects."""
        with self._lock:
            if self.state is not LinkState.UP:
                return
            self.state = LinkState.FINISHING
        try:
            self._emit(wire.TRANSLATION_STOP, None)
        except Exception as exc:  # noqa: BLE001 - ending anyway: the socket is closed next
            self._log.debug("translation_stop not sent: %s", type(exc).__name__)

    def join(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for the session to be confirmed closed, then disconnect
        and end the event thread once it has handled everything received."""
        if self.state is LinkState.FINISHING:
            self._ended.wait(min(timeout, STOP_WAIT_S))
        self._disconnect()
        self._dispatcher.stop()
        self._dispatcher.join(max(0.1, timeout))
        with self._lock:
            if self.state is not LinkState.DEAD:
                self.state = LinkState.CLOSED

    # -- the event thread -------------------------------------------------------------------

    def _handler(self, name: str) -> Callable[..., None]:
        def handle(data: Any = None, *_: Any) -> None:
            received_at = time.monotonic()
            try:
                event = wire.parse_server_event(name, data)
            except wire.WireError as exc:
                self._log.error("malformed %s from GPT Translator: %s; ignored", name, exc)
                return
            if event is not None:
                self._on_event(event, received_at)

        return handle

    def _on_event(self, event: wire.ServerEvent, received_at: float) -> None:
        match event:
            case wire.OutputAudio(pcm=pcm):
                if pcm:
                    self._listener.on_audio(Pcm16.from_bytes(pcm, wire.SAMPLE_RATE_HZ), received_at)
            case wire.Transcript(source=source, delta=delta):
                if delta:
                    self._listener.on_text("source" if source else "translation", delta)
            case wire.Status(name=wire.READY_FOR_AUDIO):
                with self._lock:
                    if self.state is LinkState.OPENING:
                        self.state = LinkState.UP
                self._ready.set()
                self._on_change()
            case wire.Status(name=wire.TRANSLATION_CLOSED):
                self._ended_by_server("the server closed the session")
            case wire.Status(name=status):
                self._log.debug("GPT Translator session %s: %s", self.name, status)
            case wire.TranslationError(message=message):
                # The document: the session may still be active. Before ready_for_audio it
                # means the start failed; after, log it and carry on.
                self._log.warning("GPT Translator error on %s: %s", self.name, message)
                if not self._ready.is_set():
                    self._failure = f"translation_error: {message}"
                    self._ready.set()
            case wire.InsufficientTokens():
                self._log.warning(
                    "GPT Translator is out of tokens on %s (remaining %s): %s",
                    self.name,
                    event.remaining_tokens,
                    event.message,
                )
                self.out_of_credit = event
                self._ended_by_server("insufficient_tokens")
                self._ready.set()

    def _ended_by_server(self, reason: str) -> None:
        with self._lock:
            if self.state in (LinkState.OPENING, LinkState.UP):
                self.state = LinkState.DEAD
                self.dead_reason = reason
        self._ended.set()
        self._on_change()

    def _on_other_event(self, event: str, *_: Any) -> None:
        self._log.debug("ignoring GPT Translator event %s", event)

    def _on_connect_error(self, data: Any = None, *_: Any) -> None:
        message = data.get("message") if isinstance(data, dict) else data
        self._failure = str(message)[:200] if message else "namespace connection refused"

    def _on_disconnect(self, *_: Any) -> None:
        # socketio calls this from its read loop, possibly before the dispatcher has handled
        # the events received just before (translation_closed, insufficient_tokens): queue it
        # behind them.
        self._dispatcher.submit(self._disconnected)

    def _disconnected(self) -> None:
        with self._lock:
            lost = self.state in (LinkState.OPENING, LinkState.UP)
            if lost:
                self.state = LinkState.DEAD
                self.dead_reason = "the connection dropped"
            elif self.state is LinkState.FINISHING:
                self.state = LinkState.CLOSED
        if lost:
            self._log.warning("GPT Translator session %s lost: connection dropped", self.name)
        self._ended.set()
        self._ready.set()
        self._on_change()

    # -- shared -----------------------------------------------------------------------------

    def _emit(self, event: str, payload: dict[str, str] | None) -> None:
        self._sio.emit(event, payload, namespace=self._endpoint.namespace)

    def _give_up(self) -> None:
        with self._lock:
            self.state = LinkState.DEAD
        self._disconnect()
        self._dispatcher.stop()

    def _disconnect(self) -> None:
        try:
            self._sio.disconnect()
        except Exception:  # noqa: BLE001 - disconnecting a broken socket may raise; nothing to do
            self._log.debug("Socket.IO disconnect raised", exc_info=True)


def describe_out_of_credit(event: wire.InsufficientTokens) -> str:
    remaining = "" if event.remaining_tokens is None else f" ({event.remaining_tokens} left)"
    return f"GPT Translator token balance exhausted{remaining}: {event.message}".rstrip(": ")
