"""The live console: ``/console``, a page that follows calls and their captions as they happen.

The page itself is static (``templates/console/``; ``static/console.js``, ``static/console/``
and ``static/console.css``: plain ES modules and CSS, no build step); everything it shows
comes from the JSON API and its event stream, which accept the same ``bridge_admin`` cookie this
module sets. So the only server-side logic here is the login: the admin token is entered once,
compared in constant time, and exchanged for a signed, expiring session
(bridge/web/sessions.py) kept in an HttpOnly, SameSite=Strict cookie (Secure behind https),
never in a URL or in script-readable storage. Logout ends the session on the server too.
Failed logins are limited per client address (bridge/web/auth.py). Every state-changing request
must carry the session's CSRF token (a hidden form field) and, from a browser, an ``Origin``
of this site.

Every response of this blueprint carries a strict Content-Security-Policy: scripts and styles
only from files of this origin, no inline code, and data fetched only from this origin. Together
with the script writing data through ``textContent`` only, a caption or number crafted by a
caller cannot run in the agent's browser.
"""

from __future__ import annotations

from typing import Final

from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request
from flask.blueprints import BlueprintSetupState
from werkzeug.wrappers import Response as BaseResponse

from bridge.settings.env import Settings
from bridge.settings.languages import load_languages
from bridge.web.api import COOKIE  # the API reads the cookie this module sets
from bridge.web.auth import LoginLimiter, same_origin, token_matches
from bridge.web.sessions import ConsoleSessions, Session, install, installed

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
CSRF_FIELD: Final = "csrf_token"
# Engines that give the console no text, and what their calls' caption columns say instead of
# staying blank. Per engine, not per deployment: the list keeps calls made before a restart.
NO_CAPTIONS: Final = {
    "relay": "No captions: the relay engine passes each party's audio through untranslated, "
    "so there is no text to show.",
}
LIMITER_KEY: Final = "bridge.web.console.logins"

bp = Blueprint(
    "console",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/console/static",
)


@bp.record_once
def _setup(state: BlueprintSetupState) -> None:
    """Sessions (unless the app factory made them, with Redis) and the login limiter."""
    settings: Settings = state.app.extensions["bridge.settings.env"]
    install(state.app.extensions, settings.admin_token)
    state.app.extensions.setdefault(LIMITER_KEY, LoginLimiter())


def _settings() -> Settings:
    settings: Settings = current_app.extensions["bridge.settings.env"]
    return settings


def _admin_token() -> str | None:
    return _settings().admin_token


def sessions() -> ConsoleSessions | None:
    """This app's console sessions; None without ADMIN_TOKEN."""
    return installed(current_app.extensions)


def current_session() -> Session | None:
    """The session the request's cookie holds, if it is valid now."""
    found = sessions()
    return None if found is None else found.verify(request.cookies.get(COOKIE))


def _cross_site() -> bool:
    hosts = {request.host, _settings().public_host}
    return not same_origin(request.headers.get("Origin"), hosts)


def _secure() -> bool:
    return _settings().public_base_url.startswith("https:")


@bp.after_request
def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Not no-referrer: under it a browser sends ``Origin: null`` even to its own origin, and
    # the Origin check of state-changing requests could not tell our page from any other.
    # Nothing leaves for other sites either way.
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    if request.endpoint != "console.static":
        # Pages and data depend on who is logged in: never cache them anywhere.
        response.headers["Cache-Control"] = "no-store"
    return response


_HTML: Final = {"Content-Type": "text/html; charset=utf-8"}


def _login_page(error: str | None = None, status: int = 200) -> tuple[str, int]:
    return render_template("console/login.html", error=error, enabled=True), status


@bp.get("/console")
def console() -> tuple[str, int]:
    if not _admin_token():
        # No token configured means nobody could ever log in: say so instead of a dead form.
        return render_template("console/login.html", error=None, enabled=False), 404
    session = current_session()
    if session is None:
        return _login_page()
    page = render_template("console/console.html", no_captions=NO_CAPTIONS, csrf_token=session.csrf)
    return page, 200


@bp.post("/console/login")
def login() -> BaseResponse | tuple[str, int]:
    found = sessions()
    if found is None:
        return render_template("console/login.html", error=None, enabled=False), 404
    if _cross_site():
        return _login_page("Log in from this console's own page.", 403)
    limiter: LoginLimiter = current_app.extensions[LIMITER_KEY]
    address = request.remote_addr or "unknown"
    wait_s = limiter.retry_after(address)
    if wait_s is not None:
        minutes = max(1, round(wait_s / 60))
        page, status = _login_page(
            f"Too many wrong tokens. Try again in {minutes} minute{'s' * (minutes != 1)}.", 429
        )
        return BaseResponse(page, status, {"Retry-After": str(int(wait_s)), **_HTML})
    if not token_matches(request.form.get("token", ""), _admin_token()):
        limiter.failed(address)
        return _login_page("That token is not right. Check it and try again.", 401)
    limiter.succeeded(address)
    value, _ = found.issue()
    # 303: the browser follows with a GET, so reloading the console never re-posts the token.
    response = redirect("/console", code=303)
    response.set_cookie(
        COOKIE,
        value,
        max_age=int(found.max_age_s),
        path="/",  # the API under /api reads it too
        secure=_secure(),
        httponly=True,
        samesite="Strict",
    )
    return response


@bp.post("/console/logout")
def logout() -> BaseResponse | tuple[str, int]:
    """End the session (on the server too: a copy of the cookie stops working) and clear it."""
    session = current_session()
    if session is not None:
        found = sessions()
        assert found is not None
        if _cross_site() or not found.csrf_ok(session, request.form.get(CSRF_FIELD)):
            return _login_page("That request did not come from this console.", 403)
        found.end(session)
    response = redirect("/console", code=303)
    response.delete_cookie(COOKIE, path="/", secure=_secure(), httponly=True, samesite="Strict")
    return response


@bp.get("/console/languages.json")
def languages() -> Response | tuple[Response, int]:
    """Each language's name in English, the console's language (codes mean little at a glance)."""
    if current_session() is None:
        return jsonify(error="unauthorized"), 401
    table = load_languages(_settings().languages_file)
    if "en" not in table:  # a trimmed table: each language's name in itself is still a name
        return jsonify({code: table[code].name for code in table.codes})
    return jsonify({code: table["en"].name_of(code) for code in table.codes})
