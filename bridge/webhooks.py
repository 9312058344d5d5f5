"""HTTP endpoints: Twilio's voice and status webhooks, health and metrics.

Every ``/twilio/*`` request and the Media Stream upgrade is signature-checked in a
``before_request`` hook, which runs before flask-sock completes the WebSocket handshake, so a
bad upgrade gets a plain HTTP 403.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from bridge.control import MEDIA_PATH, STATUS_PATH, CallControl, Draining
from bridge.metrics import Metrics
from bridge.prompts import prompt
from bridge.settings import Settings
from bridge.signatures import SignatureChecker
from bridge.twiml import say_and_hang_up

log = logging.getLogger(__name__)
VOICE_PATH = "/twilio/voice"
TWIML_TYPE = "text/xml; charset=utf-8"
# A Twilio webhook form is well under this; anything larger is refused before parsing.
MAX_FORM_BYTES = 64 * 1024

bp = Blueprint("webhooks", __name__)


def _control() -> CallControl:
    control: CallControl = current_app.extensions["bridge.control"]
    return control


def check_signatures() -> None:
    """``before_request``: refuse unsigned or wrongly signed Twilio traffic with 403."""
    checker: SignatureChecker = current_app.extensions["bridge.signatures"]
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


@bp.post(VOICE_PATH)
def voice() -> Response:
    """ "A call comes in": greet, connect the caller's stream, dial the agent."""
    settings: Settings = current_app.extensions["bridge.settings"]
    form = _require("CallSid", "From", "To")
    account = request.form.get("AccountSid")
    if account is not None and account != settings.twilio_account_sid:
        abort(403)  # signed with our token, but for another account: not ours to answer
    try:
        twiml = _control().answer(form["CallSid"], form["From"], form["To"])
    except Draining:
        # Shutting down: a 5xx makes Twilio use the number's fallback URL (another instance).
        return Response("shutting down\n", status=503, mimetype="text/plain")
    return Response(twiml, mimetype="text/xml")


@bp.post(STATUS_PATH)
def status() -> Response:
    """Call-progress events; unknown calls get a 2xx so Twilio does not retry them."""
    form = _require("CallSid", "CallStatus")
    if not _control().on_status(form["CallSid"], form["CallStatus"].lower()):
        log.info("status callback for a call that is not (or no longer) ours: ignored")
    return Response(status=204)


@bp.app_errorhandler(Exception)
def unexpected(exc: Exception) -> Response | HTTPException:
    """A bug must not leave a caller with Twilio's "application error" or make Twilio retry:
    log it with its traceback, apologise to a caller in their language, 2xx to callbacks."""
    if isinstance(exc, HTTPException):
        return exc  # 4xx and friends keep their own answer
    log.exception("unhandled error in %s %s", request.method, request.path)
    if request.path == VOICE_PATH:
        settings: Settings = current_app.extensions["bridge.settings"]
        twiml = say_and_hang_up(prompt("interpreter_unavailable", settings.caller_language))
        return Response(twiml, mimetype="text/xml")
    if request.path == STATUS_PATH:
        return Response(status=204)
    return Response("internal error\n", status=500, mimetype="text/plain")


@bp.get("/healthz")
def healthz() -> Response:
    return Response("ok\n", mimetype="text/plain")


@bp.get("/metrics")
def metrics() -> Response:
    registry = current_app.extensions["bridge.metrics"]
    assert isinstance(registry, Metrics)
    return Response(generate_latest(registry.registry), mimetype=CONTENT_TYPE_LATEST)
