"""One ``ENGINE=bland`` direction of a call: a :class:`BlandTranslationSession` whose *writer*
thread owns everything sent upstream (see bridge/engines/bland/engine.py for the engine: the
process's session slots, and the languages each direction speaks).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from bridge.audio.pcm import TWILIO_RATE_HZ, Pcm16, pcm16_to_ulaw
from bridge.engines.bland import wire
from bridge.engines.bland.link import BlandLink, LinkState, is_voiced
from bridge.engines.contract import EngineUnavailable, SessionListener, SessionSpec
from bridge.ops.logs import call_logger

if TYPE_CHECKING:
    from bridge.engines.bland.engine import BlandEngine

# The speaker's μ-law kept while no link can take it (one byte a sample); older is dropped.
HOLD_BYTES = TWILIO_RATE_HZ * 5
# At most 100 ms a media frame when sending a backlog; live audio goes out frame by frame.
MAX_SEND_BYTES = TWILIO_RATE_HZ // 10
SLOT_WAIT_S = 2.0
RECOVERY_BUDGET_S = 15.0
# A session that lived this long worked: its loss starts a fresh recovery budget. One that died
# sooner (say, closed on every start) continues the budget and backs off further, so a vendor
# that accepts and drops every session ends the call instead of being retried forever.
STABLE_S = 2.0
_RETRY_DELAYS_S = (0.0, 0.5, 1.0, 2.0, 4.0)
# Rotation: the next session opens this long before the limit (at most a third of the life)
# and takes over at the first quiet moment, or at the latest when only the guard time is left:
# enough for the old session's last answer (FINISH_WAIT_S) before Bland's limit cuts it.
ROTATE_LEAD_MAX_S = 60.0
ROTATE_GUARD_MAX_S = 10.0
QUIET_S = 0.5
_POLL_S = 0.05
CLOSE_WAIT_S = 6.0


class NoSlot(EngineUnavailable):
    """Every concurrency slot is taken."""


class BlandTranslationSession:
    """One direction of one call, across however many Bland sessions it takes."""

    def __init__(self, engine: BlandEngine, spec: SessionSpec, listener: SessionListener) -> None:
        self._engine = engine
        self._spec = spec
        self._listener = listener
        self._log = call_logger(__name__, spec.call_sid, spec.direction)
        self._tag = (
            f"{spec.call_sid[-6:]}-{'c2a' if spec.direction == 'caller_to_agent' else 'a2c'}"
        )
        self._cond = threading.Condition()
        self._pending = bytearray()  # the speaker's μ-law not yet sent
        self._closing = False
        self._failed = False
        self._last_voice_at = time.monotonic()
        self._link: BlandLink | None = None
        self._spare: BlandLink | None = None
        self._spare_refused = False  # no slot for a make-before-break rotation
        self._rotating = False
        self._opening: threading.Thread | None = None
        self._old: list[BlandLink] = []
        self._opened = 0
        self._dead_since: float | None = None
        self._trouble_since: float | None = None  # the recovery budget runs from here
        self._quick_losses = 0  # sessions in a row that died before STABLE_S
        self._worked = False  # some session lived STABLE_S (on_failed's "opened")
        self._writer = threading.Thread(
            target=self._run_writer, name=f"bland-writer:{self._tag}", daemon=True
        )

    # -- called by the call -----------------------------------------------------------------

    def start(self) -> None:
        self._writer.start()

    def send_audio(self, audio: Pcm16) -> None:
        if is_voiced(audio):
            self._last_voice_at = time.monotonic()
        ulaw = pcm16_to_ulaw(audio)  # table work; the samples came from μ-law anyway
        excess = 0
        with self._cond:
            if self._closing:
                return
            self._pending += ulaw
            excess = len(self._pending) - HOLD_BYTES
            if excess > 0:
                del self._pending[:excess]
            self._cond.notify()
        if excess > 0:
            self._engine.metrics.audio_dropped_seconds.labels("engine_input_held").inc(
                excess / TWILIO_RATE_HZ
            )

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()

    def join(self, timeout: float) -> None:
        """Wait for every thread of this session to end (teardown and tests)."""
        if self._writer.is_alive() and self._writer is not threading.current_thread():
            self._writer.join(timeout)

    # -- writer thread ----------------------------------------------------------------------

    def _run_writer(self) -> None:
        try:
            try:
                self._link = self._open(SLOT_WAIT_S)
            except EngineUnavailable as exc:
                self._fail(str(exc), opened=False)
                return
            while self._step():
                pass
        except Exception:  # noqa: BLE001 - thread boundary: end this call's translation only
            self._log.exception("Bland writer failed")
            self._fail("translation writer failed", opened=self._opened > 0)
        finally:
            self._shut_down()

    def _step(self) -> bool:
        """One turn of the writer: False when the session is over."""
        with self._cond:
            link = self._link
            up = link is not None and link.state is LinkState.UP
            if not self._closing and not (up and self._pending):
                self._cond.wait(_POLL_S)
            closing = self._closing
        link = self._link
        if closing:
            if link is not None and link.state is LinkState.UP:
                self._flush(link)
            return False
        if link is None or link.state is LinkState.DEAD:
            return self._recover()
        self._maybe_rotate(link)
        if self._link is not None and self._link.state is LinkState.UP:
            self._flush(self._link)
        return True

    def _flush(self, link: BlandLink) -> None:
        while True:
            with self._cond:
                chunk = bytes(self._pending[:MAX_SEND_BYTES])
                del self._pending[: len(chunk)]
            if not chunk:
                return
            if not link.send(chunk):
                with self._cond:  # not sent: back to the front, in order, for the next link
                    self._pending[0:0] = chunk
                return

    def _recover(self) -> bool:
        """No usable link (dropped, or retired for a rotation): take a spare or open one."""
        now = time.monotonic()
        if self._dead_since is None:
            self._dead_since = now
            dead = self._link
            lived = now - dead.opened_at if dead is not None and dead.opened_at else 0.0
            if lived >= STABLE_S or self._trouble_since is None:
                self._trouble_since = now
                self._quick_losses = 0
                self._worked = self._worked or lived >= STABLE_S
            else:
                self._quick_losses += 1
            if dead is not None:
                self._log.warning("Bland link lost (%s); opening a new session", dead.dead_reason)
            self._retire(dead)  # DELETE frees its slot for the replacement
            self._link = None
        spare = self._take_spare()
        if spare is not None:
            self._link = spare
            self._dead_since = None
            self._engine.count("rotated" if self._rotating else "replaced")
            self._rotating = False
            return True
        if now - (self._trouble_since or self._dead_since) > RECOVERY_BUDGET_S:
            self._fail("Bland session lost and no new one could be opened", opened=self._worked)
            return False
        self._open_spare(retry=True)
        with self._cond:
            self._cond.wait(_POLL_S)
        return True

    def _maybe_rotate(self, link: BlandLink) -> None:
        life = min(link.life_s, float(self._engine.settings.session_max_s))
        age = time.monotonic() - link.opened_at
        if age < life - min(ROTATE_LEAD_MAX_S, life / 3):
            return
        quiet = time.monotonic() - self._last_voice_at >= QUIET_S
        due = quiet or age >= life - min(ROTATE_GUARD_MAX_S, life / 4)
        spare = self._spare
        if spare is None:
            if not self._spare_refused:
                self._open_spare(retry=False)
            elif due and not (self._opening and self._opening.is_alive()):
                # No slot for a second session: end this one first, then open the next; the
                # speaker's audio is held (and sent) across the gap.
                self._flush(link)
                self._log.info("rotating Bland session %s break-before-make", link.name)
                self._rotating = True
                self._spare_refused = False
                self._dead_since = time.monotonic()
                self._retire(link)
                self._link = None
            return
        if spare.state is LinkState.UP and due:
            self._take_spare()
            # Everything queued so far goes to the old session, everything after to the new.
            self._flush(link)
            self._link = spare
            self._engine.count("rotated")
            self._log.info("rotated to Bland session %s after %.0f s", spare.name, age)
            self._retire(link)

    def _take_spare(self) -> BlandLink | None:
        with self._cond:
            spare, self._spare = self._spare, None
        return spare

    def _open_spare(self, *, retry: bool) -> None:
        if (self._opening is not None and self._opening.is_alive()) or self._spare is not None:
            return

        backoff = _RETRY_DELAYS_S[min(self._quick_losses, len(_RETRY_DELAYS_S) - 1) :]

        def run() -> None:
            try:
                attempts()
            except Exception:  # noqa: BLE001 - thread boundary: the writer retries or fails
                self._log.exception("opening a new Bland session failed")
            finally:
                self._wake()

        def attempts() -> None:
            for delay in backoff if retry else (0.0,):
                with self._cond:
                    if delay and not self._closing:
                        self._cond.wait(delay)
                    if self._closing:
                        return
                try:
                    link = self._open(SLOT_WAIT_S if retry else 0.0)
                except NoSlot as exc:
                    if not retry:
                        self._spare_refused = True
                        return
                    self._log.warning("no slot for a new Bland session: %s", exc)
                    continue
                except EngineUnavailable as exc:
                    self._log.warning("opening a new Bland session failed: %s", exc)
                    continue
                with self._cond:
                    if not self._closing:
                        self._spare = link
                        self._cond.notify()
                        return
                self._retire(link)
                return

        self._opening = threading.Thread(target=run, name=f"bland-open:{self._tag}", daemon=True)
        self._opening.start()

    def _open(self, slot_wait_s: float) -> BlandLink:
        engine = self._engine
        request = wire.CreateSession(
            source_language=engine.source_language(self._spec),
            target_language=self._spec.output_language,
            voice_id=engine.config.voice_id,
        )
        engine.acquire_slot(slot_wait_s)
        self._opened += 1
        link = BlandLink(
            engine.rest,
            request,
            listener=self._listener,
            on_change=self._wake,
            log=self._log,
            name=f"{self._tag}#{self._opened}",
            call_sid=self._spec.call_sid,
            release=engine.release_slot,
        )
        try:
            link.open()
        except EngineUnavailable:
            engine.count("failed")
            raise
        except Exception as exc:  # a fault of ours while opening: the same outcome
            self._log.exception("opening Bland session %s failed", link.name)
            engine.count("failed")
            link.finish("open failed")  # DELETEs what was created, frees the slot
            link.join(CLOSE_WAIT_S)
            raise EngineUnavailable(f"Bland session failed to open: {type(exc).__name__}") from exc
        engine.count("opened")
        return link

    def _retire(self, link: BlandLink | None) -> None:
        if link is not None:
            link.finish()
            self._old.append(link)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _shut_down(self) -> None:
        opening = self._opening
        if opening is not None and opening.is_alive():
            opening.join(CLOSE_WAIT_S)
        for link in (self._link, self._take_spare()):
            self._retire(link)
        self._link = None
        deadline = time.monotonic() + CLOSE_WAIT_S
        for link in self._old:
            link.join(max(0.1, deadline - time.monotonic()))
        self._engine.forget(self._spec)
        with self._cond:
            self._closing = True
            self._pending.clear()

    def _fail(self, reason: str, *, opened: bool) -> None:
        with self._cond:
            if self._failed:
                return
            self._failed = True
            self._closing = True
            self._cond.notify()
        self._listener.on_failed(reason, opened=opened)
