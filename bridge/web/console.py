"""The live console: ``/console``, a page that follows calls and their captions as they happen.

The page itself is static (``templates/console/``; ``static/console.js``, ``static/console/``
and ``static/console.css``: plain ES modules and CSS, no build step); everything it shows
comes from the JSON API and its event stream, which accept the same ``bridge_admin`` cookie this
module sets. So the only server-side logic here is the login: the admin token is entered once,
compared in constant time, and kept in an HttpOnly, SameSite=Strict cookie (Secure behind
https), never in a URL or in script-readable storage.

Every response of this blueprint carries a strict Content-Security-Policy: scripts and styles
only from files of this origin, no inline code, and data fetched only from this origin. Together
with the script writing data through ``textContent`` only, a caption or number crafted by a
caller cannot run in the agent's browser.
"""

from __future__ import annotations

import hmac
from typing import Final

from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from bridge.settings.env import Settings
from bridge.settings.languages import load_languages
from bridge.web.api import COOKIE  # the API reads the cookie this module sets

# A working week: entered once per shift pattern, not once per page load; logout clears it.
COOKIE_MAX_AGE_S: Final = 7 * 24 * 3600
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
MAX_TOKEN_CHARS: Final = 512  # a form field longer than any sane token is not compared at all
# Engines that give the console no text, and what their calls' caption columns say instead of
# staying blank. Per engine, not per deployment: the list keeps calls made before a restart.
NO_CAPTIONS: Final = {
    "relay": "No captions: the relay engine passes each party's audio through untranslated, "
    "so there is no text to show.",
}

bp = Blueprint(
    "console",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/console/static",
)


def _settings() -> Settings:
    settings: Settings = current_app.extensions["bridge.settings.env"]
    return settings


def _admin_token() -> str | None:
    return _settings().admin_token


def _matches(candidate: str | None) -> bool:
    token = _admin_token()
    if not token or not candidate or len(candidate) > MAX_TOKEN_CHARS:
        return False
    return hmac.compare_digest(candidate.encode(), token.encode())


def logged_in() -> bool:
    return _matches(request.cookies.get(COOKIE))


@bp.after_request
def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    if request.endpoint != "console.static":
        # Pages and data depend on who is logged in: never cache them anywhere.
        response.headers["Cache-Control"] = "no-store"
    return response


def _login_page(error: str | None = None, status: int = 200) -> tuple[str, int]:
    return render_template("console/login.html", error=error, enabled=True), status


@bp.get("/console")
def console() -> tuple[str, int]:
    if not _admin_token():
        # No token configured means nobody could ever log in: say so instead of a dead form.
        return render_template("console/login.html", error=None, enabled=False), 404
    if not logged_in():
        return _login_page()
    return render_template("console/console.html", no_captions=NO_CAPTIONS), 200


@bp.post("/console/login")
def login() -> BaseResponse | tuple[str, int]:
    if not _admin_token():
        return render_template("console/login.html", error=None, enabled=False), 404
    if not _matches(request.form.get("token", "")):
        return _login_page("That token is not right. Check it and try again.", 401)
    # 303: the browser follows with a GET, so reloading the console never re-posts the token.
    response = redirect("/console", code=303)
    response.set_cookie(
        COOKIE,
        request.form["token"],
        max_age=COOKIE_MAX_AGE_S,
        path="/",  # the API under /api reads it too
        secure=_settings().public_base_url.startswith("https:"),
        httponly=True,
        samesite="Strict",
    )
    return response


@bp.post("/console/logout")
def logout() -> BaseResponse:
    response = redirect("/console", code=303)
    response.delete_cookie(
        COOKIE,
        path="/",
        secure=_settings().public_base_url.startswith("https:"),
        httponly=True,
        samesite="Strict",
    )
    return response


@bp.get("/console/languages.json")
def languages() -> Response | tuple[Response, int]:
    """Each language's name in English, the console's language (codes mean little at a glance)."""
    if not logged_in():
        return jsonify(error="unauthorized"), 401
    table = load_languages(_settings().languages_file)
    if "en" not in table:  # a trimmed table: each language's name in itself is still a name
        return jsonify({code: table[code].name for code in table.codes})
    return jsonify({code: table["en"].name_of(code) for code in table.codes})
