"""HTTP endpoints: Twilio's webhooks (voice, language menu, status, machine detection),
health and metrics.

Every ``/twilio/*`` request and the Media Stream upgrade is signature-checked in a
``before_request`` hook, which runs before flask-sock completes the WebSocket handshake, so a
bad upgrade gets a plain HTTP 403.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from bridge.calls.control import CallControl, Draining
from bridge.ops.logs import MENU_SPEECH_LOGGER
from bridge.ops.metrics import Metrics
from bridge.settings.env import Settings
from bridge.telephony.language_menu import MENU_ATTEMPTS, LanguageMenu
from bridge.telephony.routes import (
    AMD_PATH,
    FALLBACK_PATH,
    LANGUAGE_PATH,
    MEDIA_PATH,
    STATUS_PATH,
    VOICE_PATH,
)
from bridge.telephony.signatures import SignatureChecker
from bridge.telephony.twiml import say_and_hang_up
from bridge.web.auth import bearer_matches

log = logging.getLogger(__name__)
heard_log = logging.getLogger(MENU_SPEECH_LOGGER)  # off unless LOG_SPEECH=on
TWIML_TYPE = "text/xml; charset=utf-8"
# A Twilio webhook form is well under this; anything larger is refused before parsing.
MAX_FORM_BYTES = 64 * 1024

bp = Blueprint("webhooks", __name__)


def _control() -> CallControl:
    control: CallControl = current_app.extensions["bridge.calls.control"]
    return control


def _settings() -> Settings:
    settings: Settings = current_app.extensions["bridge.settings.env"]
    return settings


def _menu() -> LanguageMenu:
    settings = _settings()
    return LanguageMenu(
        settings.caller_languages, _control().prompts, settings.public_url(LANGUAGE_PATH)
    )


def _twiml(document: str) -> Response:
    return Response(document, mimetype="text/xml")


def check_signatures() -> None:
    """``before_request``: refuse unsigned or wrongly signed Twilio traffic with 403."""
    checker: SignatureChecker = current_app.extensions["bridge.telephony.signatures"]
    if request.path == MEDIA_PATH:
        if not checker.stream_ok(request):
            log.warning("media stream upgrade refused: bad or missing signature")
            abort(403)
    elif request.path.startswith("/twilio/"):
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            abort(413)
        if request.method != "POST":
            abort(405)
        if not checker.webhook_ok(request):
            log.warning("webhook %s refused: bad or missing signature", request.path)
            abort(403)


def _require(*names: str) -> dict[str, str]:
    values = {n: (request.form.get(n) or "").strip() for n in names}
    missing = [n for n, v in values.items() if not v]
    if missing:
        abort(
            Response(
                f"missing form fields: {', '.join(missing)}\n", status=400, mimetype="text/plain"
            )
        )
    return values


def _call_form() -> dict[str, str]:
    form = _require("CallSid", "From", "To")
    account = request.form.get("AccountSid")
    if account is not None and account != _settings().twilio_account_sid:
        abort(403)  # signed with our token, but for another account: not ours to answer
    return form


@bp.post(VOICE_PATH)
def voice() -> Response:
    """ "A call comes in": greet, connect the caller's stream, dial the agent; or, with more
    than one caller language, first ask which one (admission is checked before the menu)."""
    form = _call_form()
    control = _control()
    try:
        if len(_settings().caller_languages) == 1:
            return _twiml(control.answer(form["CallSid"], form["From"], form["To"]))
        declined = control.screen(form["CallSid"], form["From"])
    except Draining:
        # Shutting down: a 5xx makes Twilio use the number's fallback URL (another instance).
        return Response("shutting down\n", status=503, mimetype="text/plain")
    return _twiml(declined if declined is not None else _menu().offer(1))


@bp.post(LANGUAGE_PATH)
def language() -> Response:
    """The menu's answer (``Digits`` or ``SpeechResult``), or its silence (the ``<Redirect>``
    after the ``<Gather>``). ``attempt`` is in the signed URL, so a caller cannot forge it."""
    form = _call_form()
    attempt = request.args.get("attempt", "")
    if not attempt.isdigit() or not 1 <= int(attempt) <= MENU_ATTEMPTS:
        abort(Response("bad attempt\n", status=400, mimetype="text/plain"))
    menu = _menu()
    sid = form["CallSid"]
    digits, speech = request.form.get("Digits", ""), request.form.get("SpeechResult", "")
    choice = menu.choose(digits, speech)
    if choice is None:
        # What kind of answer, never what was said: speech is personal data (the call store's,
        # not the logs'). With LOG_SPEECH=on the words go to the speech logger, at DEBUG, so an
        # operator debugging the menu can see which names callers use (and add them).
        heard = f"{len(digits)} key(s)" if digits else "speech" if speech else "nothing"
        log.info("call=%s language menu attempt %s: no choice in %s", sid, attempt, heard)
        if speech:
            heard_log.debug("call=%s language menu attempt %s heard %r", sid, attempt, speech[:200])
        if int(attempt) < MENU_ATTEMPTS:
            return _twiml(menu.offer(int(attempt) + 1))
        _metrics().calls_refused.labels("no_language").inc()
        return _twiml(menu.give_up())
    log.info("call=%s chose %s (attempt %s)", sid, choice, attempt)
    control = _control()
    try:
        return _twiml(control.answer(sid, form["From"], form["To"], caller_language=choice))
    except Draining:
        # Twilio has no fallback for an action URL: tell the caller ourselves.
        return _twiml(say_and_hang_up(control.prompts.prompt("shutdown", choice)))


@bp.post(FALLBACK_PATH)
def fallback() -> Response:
    """Apologise in the lead language and hang up, instead of Twilio's own "an application
    error has occurred". Twilio says why in ``ErrorCode``/``ErrorUrl``; nobody is dialled.
    Only helps while this host still answers (a draining or failing instance); a host that is
    down needs a fallback URL on another one."""
    log.warning(
        "fallback: Twilio could not use %s (error %s); caller told to call again",
        request.form.get("ErrorUrl", "the voice URL"),
        request.form.get("ErrorCode", "unknown"),
    )
    notice = _control().prompts.prompt("interpreter_unavailable", _settings().lead_language)
    return _twiml(say_and_hang_up(notice))


@bp.post(STATUS_PATH)
def status() -> Response:
    """Call-progress events; unknown calls get a 2xx so Twilio does not retry them."""
    form = _require("CallSid", "CallStatus")
    if not _control().on_status(form["CallSid"], form["CallStatus"].lower()):
        log.info("status callback for a call that is not (or no longer) ours: ignored")
    return Response(status=204)


@bp.post(AMD_PATH)
def answered_by() -> Response:
    """Answering machine detection for the agent leg (asynchronous: the call already runs)."""
    form = _require("CallSid", "AnsweredBy")
    if not _control().on_answered_by(form["CallSid"], form["AnsweredBy"].lower()):
        log.info("machine detection result for a call that is not (or no longer) ours: ignored")
    return Response(status=204)


@bp.app_errorhandler(Exception)
def unexpected(exc: Exception) -> Response | HTTPException:
    """A bug must not leave a caller with Twilio's "application error" or make Twilio retry:
    log it with its traceback, apologise to a caller in their language, 2xx to callbacks."""
    if isinstance(exc, HTTPException):
        return exc  # 4xx and friends keep their own answer
    log.exception("unhandled error in %s %s", request.method, request.path)
    if request.path in (VOICE_PATH, LANGUAGE_PATH, FALLBACK_PATH):
        notice = _control().prompts.prompt("interpreter_unavailable", _settings().lead_language)
        return _twiml(say_and_hang_up(notice))
    if request.path in (STATUS_PATH, AMD_PATH):
        return Response(status=204)
    return Response("internal error\n", status=500, mimetype="text/plain")


@bp.get("/healthz")
def healthz() -> Response:
    return Response("ok\n", mimetype="text/plain")


def _metrics() -> Metrics:
    registry = current_app.extensions["bridge.ops.metrics"]
    assert isinstance(registry, Metrics)
    return registry


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics: open, or with METRICS_TOKEN only for ``Authorization: Bearer`` it
    (Prometheus's ``authorization`` scrape setting). Binding it elsewhere is docs/operations.md."""
    expected = _settings().metrics_token
    if expected is not None and not bearer_matches(request.headers.get("Authorization"), expected):
        return Response(
            "missing or wrong metrics token\n",
            status=401,
            mimetype="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return Response(generate_latest(_metrics().registry), mimetype=CONTENT_TYPE_LATEST)
