"""The admin API: call records, transcripts and live call events, as JSON over HTTP.

Every route needs ``ADMIN_TOKEN``: ``Authorization: Bearer <token>``, or the ``bridge_admin``
cookie holding a console session (what the console's login sets, so its links and EventSource
work; bridge/web/sessions.py). A state-changing request made with the cookie must also carry
the session's CSRF token in ``X-CSRF-Token``; one made with the header needs none (no browser
sends it on its own). Without ADMIN_TOKEN the API answers 503. Tokens are compared in constant
time. Responses are never cached (``Cache-Control: no-store``): they hold what callers said.

Routes (see the README's "API" section for the JSON):

* ``GET /api/calls``: newest first, paged (``limit``, ``before``), filtered by ``since``,
  ``until``, ``number`` and ``outcome``; calls in progress first, ``"active": true``.
* ``GET /api/calls/<sid>``: one call with its transcript, by the caller's or agent's CallSid.
* ``GET /api/calls/<sid>/transcript.txt`` and ``.vtt``: the transcript to download.
* ``GET /api/calls/<sid>/events``: server-sent events of a live call (bridge/web/events_stream.py).
* ``DELETE /api/calls/<sid>``: erase one call everywhere it is kept (the store, the live view,
  Redis) and record who did it (bridge/records/erasure.py); a call in progress is refused
  with 409: it would be written again by its own events; end it first.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException

from bridge.records.erasure import Eraser, utcnow
from bridge.records.store import MAX_PAGE, BadCursor, CallStore, StoreUnavailable
from bridge.records.views import CallDetail, CallSummary, transcript_text, transcript_vtt
from bridge.settings.env import Settings
from bridge.web.api_shared import (
    ErasesSharedCalls,
    SharedCalls,
    find_shared,
    follow_shared,
    in_progress_shared,
)
from bridge.web.auth import STATE_CHANGING, bearer, bearer_matches, same_origin
from bridge.web.events_stream import StreamSlots, event_stream
from bridge.web.live import LiveCalls
from bridge.web.sessions import install, installed

log = logging.getLogger(__name__)
COOKIE = "bridge_admin"  # bridge/web/console.py sets it (HttpOnly, SameSite=Strict)
CSRF_HEADER = "X-CSRF-Token"
DEFAULT_PAGE = 50
# How long an events request waits for the live view to catch up with a call just recorded.
LIVE_CATCH_UP_S = 2.0
_SID = re.compile(r"^[A-Za-z0-9]{1,64}$")

bp = Blueprint("api", __name__, url_prefix="/api")


class ApiError(Exception):
    """An answer other than 200, with a JSON body ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@bp.record_once
def _setup(state: BlueprintSetupState) -> None:
    state.app.extensions.setdefault("bridge.web.api.streams", StreamSlots())
    settings: Settings = state.app.extensions["bridge.settings.env"]
    install(state.app.extensions, settings.admin_token)


def _settings() -> Settings:
    settings: Settings = current_app.extensions["bridge.settings.env"]
    return settings


def _store() -> CallStore:
    store = current_app.extensions.get("bridge.records.store")
    if not isinstance(store, CallStore):
        raise ApiError(503, "the call store is not running")
    return store


def _shared() -> SharedCalls | None:
    """The cluster's shared call state with several instances (``REDIS_URL``), else None."""
    shared: SharedCalls | None = current_app.extensions.get("bridge.shared_calls")
    return shared


def _live() -> LiveCalls:
    live = current_app.extensions.get("bridge.web.live")
    if not isinstance(live, LiveCalls):
        raise ApiError(503, "the live view is not running")
    return live


# -- authorisation and errors ----------------------------------------------------------------


@bp.before_request
def _authorise() -> Response | tuple[Response, int] | None:
    settings = _settings()
    expected = settings.admin_token
    if expected is None:
        return _error(503, "the API is disabled until ADMIN_TOKEN is set")
    if bearer(request.headers.get("Authorization")):
        if bearer_matches(request.headers.get("Authorization"), expected):
            g.eraser = Eraser("bearer", request.remote_addr or "")
            return None
    else:
        found = installed(current_app.extensions)
        session = None if found is None else found.verify(request.cookies.get(COOKIE))
        if found is not None and session is not None:
            g.eraser = Eraser("console", request.remote_addr or "", session.sid)
            if request.method not in STATE_CHANGING:
                return None
            hosts = {request.host, settings.public_host}
            # A browser sends the cookie on its own; only our page knows the CSRF token.
            if same_origin(request.headers.get("Origin"), hosts) and found.csrf_ok(
                session, request.headers.get(CSRF_HEADER)
            ):
                return None
            return _error(403, "missing or wrong CSRF token")
    response, status = _error(401, "missing or wrong admin token")
    response.headers["WWW-Authenticate"] = 'Bearer realm="bridge"'
    return response, status


@bp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def _json(body: Any, status: int = 200) -> Response:
    # Fields in the order the records define them (jsonify would sort them), UTF-8 as is.
    text = current_app.json.dumps(body, sort_keys=False, ensure_ascii=False)
    return Response(text + "\n", status=status, mimetype="application/json")


def _error(status: int, message: str) -> tuple[Response, int]:
    return _json({"error": message}, status), status


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> tuple[Response, int]:
    return _error(exc.status, exc.message)


@bp.errorhandler(StoreUnavailable)
def _store_unavailable(exc: StoreUnavailable) -> tuple[Response, int]:
    return _error(503, str(exc))


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[Response, int]:
    return _error(exc.code or 500, exc.description or exc.name)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> tuple[Response, int]:
    log.exception("unhandled error in %s %s", request.method, request.path)
    return _error(500, "internal error")


# -- query arguments -------------------------------------------------------------------------


def _time_arg(name: str, *, end_of_day: bool) -> datetime | None:
    """An ISO 8601 date or date-time (UTC unless it says otherwise). A date alone is the
    start of that day, or for ``until`` the end of it: ``until=2026-05-01`` includes May 1."""
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end_of_day else start
        try:
            at = datetime.fromisoformat(raw)
        except ValueError:
            # An offset's "+" sent unencoded arrives as a space.
            head, _, offset = raw.rpartition(" ")
            at = datetime.fromisoformat(f"{head}+{offset}")
    except ValueError:
        raise ApiError(400, f"{name}: not an ISO 8601 date or date-time") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _number_arg() -> str | None:
    raw = request.args.get("number", "").strip()
    # "+34911222333" sent unencoded arrives as " 34911222333" (stripped above).
    return f"+{raw}" if raw[:1].isdigit() else raw or None


def _limit_arg() -> int:
    raw = request.args.get("limit", "").strip()
    if not raw:
        return DEFAULT_PAGE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise ApiError(400, f"limit: a whole number from 1 to {MAX_PAGE}")
    return int(raw)


def _matches(
    s: CallSummary, since: datetime | None, until: datetime | None, number: str | None
) -> bool:
    return (
        (since is None or s.started_at >= since)
        and (until is None or s.started_at < until)
        and (number is None or number in (s.caller_number, s.agent_number))
    )


# -- routes ----------------------------------------------------------------------------------


@bp.get("/calls")
def list_calls() -> Response:
    """Calls newest first; on the first page, calls in progress come before the rest."""
    since = _time_arg("since", end_of_day=False)
    until = _time_arg("until", end_of_day=True)
    number = _number_arg()
    outcome = request.args.get("outcome", "").strip() or None
    before = request.args.get("before", "").strip() or None
    limit = _limit_arg()
    # In progress: listed from the live view (fresher), on the first page only, and never
    # again from the store, where they also are (so they take none of a page's ``limit``).
    # With several instances, whichever the cluster's shared state says are in progress.
    active = _live().active()
    shared = _shared()
    if shared is not None:
        oldest = datetime.now(UTC) - timedelta(seconds=_settings().max_call_s + 60)
        active = in_progress_shared(active, _store(), shared, oldest)
    try:
        stored, next_cursor = _store().list_calls(
            since=since,
            until=until,
            number=number,
            outcome=outcome,
            limit=limit,
            before=before,
            exclude={s.call_sid for s in active},
        )
    except BadCursor:
        raise ApiError(400, "before: not a cursor from a previous page") from None
    items: list[dict[str, Any]] = []
    if before is None and outcome is None:  # a call in progress has no outcome yet
        items += [s.to_json() for s in active if _matches(s, since, until, number)]
    items += [s.to_json() for s in stored]
    return _json({"calls": items, "next": next_cursor})


def _find(sid: str) -> CallDetail:
    """A live call from the live view (freshest); otherwise the stored record. With several
    instances, as the cluster knows it (bridge/web/api_shared.py)."""
    if not _SID.match(sid):
        raise ApiError(404, "no such call")
    live = _live().detail(sid)
    shared = _shared()
    if shared is not None:
        found = find_shared(sid, live, _store(), shared)
        if found is None:
            raise ApiError(404, "no such call")
        return found
    if live is not None and live.summary.ended_at is None:
        return live
    try:
        stored = _store().get_call(sid)
    except StoreUnavailable:
        if live is None:
            raise
        stored = None  # just ended: what the live view saw is the best answer right now
    found = stored or live
    if found is None:
        raise ApiError(404, "no such call")
    return found


@bp.get("/calls/<sid>")
def get_call(sid: str) -> Response:
    return _json(_find(sid).to_json())


def _download(body: str, mimetype: str, filename: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@bp.get("/calls/<sid>/transcript.txt")
def transcript_txt(sid: str) -> Response:
    detail = _find(sid)
    return _download(transcript_text(detail), "text/plain", f"{detail.summary.call_sid}.txt")


@bp.get("/calls/<sid>/transcript.vtt")
def transcript_webvtt(sid: str) -> Response:
    detail = _find(sid)
    return _download(transcript_vtt(detail), "text/vtt", f"{detail.summary.call_sid}.vtt")


@bp.get("/calls/<sid>/events")
def call_events(sid: str) -> Response:
    """Server-sent events of one call: ``snapshot``, then ``fragment``, ``segment``,
    ``delay``, ``summary`` and finally ``ended``; a comment heartbeat when quiet."""
    if not _SID.match(sid):
        raise ApiError(404, "no such call")
    live = _live()
    slots: StreamSlots = current_app.extensions["bridge.web.api.streams"]
    watch = live.watch(sid)
    ended: CallDetail | None = None
    shared = _shared()
    if watch is None and shared is not None:
        # Several instances: a call whose parts are all elsewhere is followed through the
        # shared store and Redis until its end is recorded.
        found = find_shared(sid, None, _store(), shared)
        if found is None:
            raise ApiError(404, "no such call")
        if found.summary.ended_at is None:
            if not slots.acquire():
                raise ApiError(503, f"too many event streams open (at most {slots.limit})")
            return event_stream(
                None,
                None,
                live=live,
                slots=slots,
                config=current_app.config,
                environ=request.environ,
                follow=follow_shared(found, _store(), shared),
            )
        ended = found
    elif watch is None:
        ended = _store().get_call(sid)  # over already: its record, then "ended"
        if ended is None:
            raise ApiError(404, "no such call")
        if ended.summary.ended_at is None:
            # Recorded but not yet in the live view: both follow the same events on their own
            # threads, so a call asked for the moment it starts can be in one and not the
            # other. Give the live view a moment rather than report a live call as ended.
            deadline = time.monotonic() + LIVE_CATCH_UP_S
            while watch is None and time.monotonic() < deadline:
                time.sleep(0.02)
                watch = live.watch(sid)
            ended = None if watch is not None else ended
    if not slots.acquire():
        if watch is not None:
            watch.close()
        raise ApiError(503, f"too many event streams open (at most {slots.limit})")
    return event_stream(
        watch,
        ended,
        live=live,
        slots=slots,
        config=current_app.config,
        environ=request.environ,
    )


@bp.delete("/calls/<sid>")
def erase_call(sid: str) -> Response:
    """Erase one call (by either leg's CallSid): its record and transcript from the store,
    the live view and Redis; the erasure is recorded (who, when), the content is not."""
    if not _SID.match(sid):
        raise ApiError(404, "no such call")
    live = _live()
    seen = live.detail(sid)
    if seen is not None and seen.summary.ended_at is None:
        raise ApiError(409, "the call is in progress: end it first, then erase it")
    store = _store()
    stored = store.get_call(sid)
    known = stored or seen
    if known is None:
        raise ApiError(404, "no such call")
    caller_sid, agent_sid = known.summary.call_sid, known.summary.agent_sid
    shared = _shared()
    if shared is not None:
        in_progress = shared.live_calls([caller_sid])
        if in_progress is None:
            raise ApiError(503, "cannot tell whether the call is in progress: Redis unreachable")
        if caller_sid in in_progress:
            raise ApiError(409, "the call is in progress: end it first, then erase it")
    if stored is None or stored.summary.ended_at is None:
        # Live elsewhere, or just ended and its end not written yet: the store's writer would
        # write the events still coming as a new record of the call.
        raise ApiError(409, "the call's end is not recorded yet: erase it once it is")
    eraser: Eraser = g.eraser
    at = utcnow()
    store.erase(caller_sid, eraser, at)
    live.erase(caller_sid)
    if isinstance(shared, ErasesSharedCalls) and not shared.erase_shared(caller_sid, agent_sid):
        log.warning("call=%s erased; its Redis keys are left to expire", caller_sid)
    log.info("call=%s erased by %s from %s", caller_sid, eraser.auth_method, eraser.client_address)
    return _json({"erased": caller_sid, "erased_at": at.isoformat()})
