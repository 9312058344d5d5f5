"""The live console (/console): its login, its headers, and a whole call followed in Chromium.

The first tests talk to the console blueprint through Flask's test client. The last one runs
the real bridge under gunicorn with the Twilio and OpenAI stand-ins, logs into the console in
Debian's headless chromium (Playwright), follows a simulated call's captions live, and takes
a screenshot: into the test's temporary folder, or, with ``UPDATE_SCREENSHOT=1``, over the one
the README shows (docs/console.png), so an ordinary run leaves the work tree clean.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bridge.app import create_app
from bridge.calls.events import CallStarted, EventHub
from bridge.engines.registry import settings_from_env
from bridge.engines.relay import RelayEngine
from bridge.web import console
from bridge.web.api import COOKIE
from tests import a11y, chromium
from tests.bridge_process import ACCOUNT_SID, AGENT_NUMBER, AUTH_TOKEN, OPENAI_KEY, ROOT
from tests.call_events import wait_until
from tests.call_helpers import (
    BRIDGE_NUMBER,
    CALLER_NUMBER,
    LEAD_IN_S,
    Stack,
    agent_of,
    bridge_stack,
    speech,
    wait_call_over,
    wait_streaming,
)
from tests.console_call import DialogueTranslator
from tests.fakes.audio import AGENT_EN_8K_MULAW, CALLER_ES_8K_MULAW
from tests.fakes.openai_translate import FakeTranslationServer
from tests.fakes.twilio import DialBehaviour

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

TOKEN = "console-test-token-5b7e0c1d"
SCREENSHOT = ROOT / "docs" / "console.png"
STATIC = ROOT / "bridge" / "web" / "static"


def console_client(public_base_url: str = "http://127.0.0.1:8", token: str = TOKEN) -> FlaskClient:
    """The console blueprint alone, on the settings it reads (no calls, no store)."""
    env = {
        "PUBLIC_BASE_URL": public_base_url,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "AGENT_NUMBER": AGENT_NUMBER,
        "ENGINE": "relay",
        "ADMIN_TOKEN": token,
    }
    app = Flask(__name__)
    app.extensions["bridge.settings.env"] = settings_from_env(env, env_file=None)
    app.register_blueprint(console.bp)
    return app.test_client()


def log_in(client: FlaskClient, token: str = TOKEN) -> Any:
    return client.post("/console/login", data={"token": token})


def test_without_a_cookie_the_console_asks_for_the_token() -> None:
    response = console_client().get("/console")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert '<label for="token">' in page and 'type="password"' in page
    assert 'action="/console/login"' in page and 'method="post"' in page
    assert "captions-" not in page
    assert response.headers["Cache-Control"] == "no-store"


def test_a_wrong_token_is_refused_with_the_form_and_a_message() -> None:
    client = console_client()
    for wrong in ("nope", TOKEN + "x", TOKEN[:-1], "", "x" * 10_000):
        response = log_in(client, wrong)
        page = response.get_data(as_text=True)
        assert response.status_code == 401, wrong
        assert "That token is not right" in page and 'role="alert"' in page
        assert "Set-Cookie" not in response.headers
    assert "captions-" not in client.get("/console").get_data(as_text=True)


def test_the_right_token_is_exchanged_for_a_session_in_a_strict_http_only_cookie() -> None:
    client = console_client()
    response = log_in(client)
    assert response.status_code == 303 and response.headers["Location"] == "/console"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=") and TOKEN not in cookie  # a session, not the token
    assert "Max-Age=43200" in cookie  # 12 hours
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    page = client.get("/console").get_data(as_text=True)
    assert 'id="captions-caller_to_agent"' in page and 'id="captions-agent_to_caller"' in page


def test_the_cookie_is_secure_behind_https() -> None:
    response = log_in(console_client("https://bridge.example.com"))
    assert "; Secure" in response.headers["Set-Cookie"]


def test_logout_clears_the_cookie() -> None:
    client = console_client()
    log_in(client)
    page = client.get("/console").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    response = client.post("/console/logout", data={"csrf_token": csrf.group(1)})
    assert response.status_code == 303
    assert response.headers["Set-Cookie"].startswith(f"{COOKIE}=;")
    assert "captions-" not in client.get("/console").get_data(as_text=True)


def test_without_an_admin_token_the_console_is_off() -> None:
    client = console_client(token="")
    response = client.get("/console")
    assert response.status_code == 404
    assert "ADMIN_TOKEN" in response.get_data(as_text=True)
    assert log_in(client, "").status_code == 404


def test_every_console_response_has_a_strict_csp() -> None:
    client = console_client()
    responses = [client.get("/console"), log_in(client, "wrong"), log_in(client)]
    responses += [client.get("/console"), client.get("/console/languages.json")]
    assets = ("console.js", "console/call.js", "console.css", "console-icon.svg")
    responses += [client.get(f"/console/static/{name}") for name in assets]
    assert all(r.status_code == 200 for r in responses[-len(assets) :])
    for response in responses:
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_pages_have_no_inline_script_or_style() -> None:
    client = console_client()
    pages = [client.get("/console").get_data(as_text=True)]
    log_in(client)
    pages.append(client.get("/console").get_data(as_text=True))
    for page in pages:
        assert re.findall(r"<script(?![^>]*\ssrc=)", page) == []
        assert "<style" not in page and " style=" not in page
        assert not re.search(r"\son[a-z]+=", page)  # no inline event handlers either


def test_the_script_writes_data_as_text_and_keeps_no_token() -> None:
    scripts = sorted(STATIC.rglob("*.js"))
    assert len(scripts) >= 2
    for path in scripts:
        script = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in script, (path.name, sink)
        for store in ("localStorage", "sessionStorage", "document.cookie", "?token"):
            assert store not in script, (path.name, store)


def test_language_names_need_the_cookie() -> None:
    client = console_client()
    assert client.get("/console/languages.json").status_code == 401
    log_in(client)
    names = client.get("/console/languages.json").get_json()
    assert names["es"] == "Spanish" and names["en"] == "English"


def test_a_relay_call_says_in_its_caption_columns_why_they_stay_empty(tmp_path: Path) -> None:
    """The relay gives no text. The page carries a note per caption column keyed by engine
    name, and the script shows the notes whose key is the open call's ``engine`` from the API:
    so the relay engine's own name must reach the API and key a note in both columns."""
    env = {
        "PUBLIC_BASE_URL": "http://127.0.0.1:8",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "AGENT_NUMBER": AGENT_NUMBER,
        "ENGINE": "relay",
        "ADMIN_TOKEN": TOKEN,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'calls.sqlite3'}",
    }
    app = create_app(settings_from_env(env, env_file=None))
    try:
        hub: EventHub = app.extensions["bridge.hub"]
        at = datetime.now(UTC)
        hub.publish(
            CallStarted("CA1", CALLER_NUMBER, BRIDGE_NUMBER, "es", "en", RelayEngine.name, at)
        )
        client = app.test_client()
        log_in(client)
        # The live view takes the event on its own thread: wait for it, with a deadline.
        assert wait_until(lambda: client.get("/api/calls/CA1").status_code == 200, 10)
        detail = client.get("/api/calls/CA1")
        assert detail.json is not None
        engine = detail.json["engine"]
        page = client.get("/console").get_data(as_text=True)
    finally:
        app.extensions["bridge.web.live"].close()
        app.extensions["bridge.records.store"].close()
    for direction in ("caller_to_agent", "agent_to_caller"):
        column = page.split(f'id="title-{direction}"')[1].split("</section>")[0]
        notes = re.findall(
            r'<p class="no-captions" data-engine="([^"]+)" hidden>([^<]+)</p>', column
        )
        assert engine in dict(notes), (direction, engine, notes)
        note = dict(notes)[engine]
        assert "relay engine passes" in note and "untranslated" in note and "No captions" in note
    script = (STATIC / "console" / "call.js").read_text()
    assert "querySelectorAll('.no-captions')" in script and "dataset.engine" in script


# -- end to end, in Chromium ----------------------------------------------------------------


def test_without_chromium_the_reason_names_make_system_deps_and_nothing_is_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Root, with an apt-get on PATH that only records its calls: all a helper would need to
    # install packages itself, which only `make system-deps` may do.
    calls = tmp_path / "apt-get-calls"
    fake = tmp_path / "apt-get"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(chromium, "_chromium", lambda: None)
    executable, reason = chromium.provision()
    assert executable is None
    assert "chromium is not installed" in reason and "make system-deps" in reason
    assert not calls.exists(), calls.read_text()


def test_without_playwright_the_reason_names_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chromium, "_chromium", lambda: "/usr/bin/chromium")
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)  # import fails
    executable, reason = chromium.provision()
    assert executable is None
    assert "Playwright is not importable" in reason and "make test" in reason


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable, reason = chromium.provision()
    if executable is None:
        pytest.skip(f"no headless browser for the console test: {reason}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=chromium.FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def console_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The bridge under gunicorn with an admin token, its store in a temporary SQLite file."""
    tmp = tmp_path_factory.mktemp("console")
    env = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "ADMIN_TOKEN": TOKEN,
        "DATABASE_URL": f"sqlite:///{tmp / 'bridge.sqlite3'}",
    }
    with (
        FakeTranslationServer(DialogueTranslator()) as openai,
        bridge_stack(tmp, env, openai) as stack,
    ):
        yield stack


def text_of(page: Page, selector: str) -> str:
    return page.locator(selector).inner_text()


def wait_text(page: Page, selector: str, pattern: str, timeout_s: float = 15.0) -> str:
    """Wait until the element's text matches ``pattern`` (a regex); return the text."""
    deadline = time.monotonic() + timeout_s
    while True:
        current = text_of(page, selector) if page.locator(selector).count() else ""
        if re.search(pattern, current):
            return current
        assert time.monotonic() < deadline, f"{selector}: {current!r} never matched {pattern!r}"
        time.sleep(0.1)


def wait_js(page: Page, expression: str, timeout_s: float = 5.0) -> None:
    """Poll a JavaScript expression until true (not ``wait_for_function``: it evaluates
    strings with eval, which the console's CSP rightly forbids)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"never true: {expression}"
        time.sleep(0.05)


def assert_accessible(page: Page) -> None:
    problems = page.evaluate(a11y.CHECK)
    assert problems == [], problems


def log_into_console(page: Page, base: str) -> None:
    response = page.goto(f"{base}/console")
    assert response is not None and response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert_accessible(page)

    page.fill("#token", "not-the-token-at-all")
    with page.expect_response(f"{base}/console/login") as refused:
        page.click("button[type=submit]")
    assert refused.value.status == 401
    assert "That token is not right" in text_of(page, "#token-error")
    assert_accessible(page)  # the error too: announced (role=alert), tied to the field, legible

    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("#active-calls", state="attached")
    assert page.url == f"{base}/console"  # the token is in no URL...
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies[COOKIE]["httpOnly"] and cookies[COOKIE]["sameSite"] == "Strict"
    # ...and out of the script's reach: not in document.cookie, not in web storage.
    assert page.evaluate("document.cookie") == ""
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0


def open_by_keyboard(page: Page, sid: str) -> None:
    """Tab from the top of the page to the call's link, then Enter, as a keyboard user would."""
    link = f'#active-calls a.call-link[data-sid="{sid}"]'
    page.wait_for_selector(link, timeout=10_000)
    page.evaluate("document.activeElement && document.activeElement.blur()")
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.sid || ''") == sid:
            break
    else:
        raise AssertionError("Tab never reached the call in the list")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focused call shows no focus ring"
    page.keyboard.press("Enter")
    wait_js(page, "document.activeElement.id === 'call-title'")
    assert page.url.endswith(f"#{sid}")


@pytest.mark.slow
def test_console_follows_a_call_live(
    browser: Browser, console_stack: Stack, tmp_path: Path
) -> None:
    tmp_shot = tmp_path / "console.png"
    twilio, bridge = console_stack.twilio, console_stack.bridge
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    log_into_console(page, bridge.url)
    assert_accessible(page)

    twilio.default_dial = DialBehaviour(audio=speech(AGENT_EN_8K_MULAW, LEAD_IN_S + 0.5))
    caller = twilio.place_call(speech(CALLER_ES_8K_MULAW), from_=CALLER_NUMBER, to=BRIDGE_NUMBER)
    wait_streaming(twilio, caller, agent_of(twilio, caller))
    open_by_keyboard(page, caller.sid)

    assert text_of(page, "#call-title") == f"Call from {CALLER_NUMBER}"
    assert text_of(page, "#call-state") == "Live"
    assert text_of(page, "#caller-language") == "Spanish"
    assert text_of(page, "#agent-language") == "English"
    # Captions stream into both columns: each party's words and their translation.
    to_agent, to_caller = "#captions-caller_to_agent", "#captions-agent_to_caller"
    wait_text(page, to_agent, r"Hola, buenos[\s\S]*Hello, good")
    wait_text(page, to_caller, r"Thanks for[\s\S]*Gracias por")
    assert page.locator(f"{to_agent} .translation .text").first.get_attribute("lang") == "en"
    assert page.locator(f"{to_caller} .translation .text").first.get_attribute("lang") == "es"
    for direction in ("caller_to_agent", "agent_to_caller"):
        wait_text(page, f"#delay-{direction}", r"^\d+\.\d s")
    # A pause closes the utterance's segment: its line is final (no longer busy) and the
    # next words start a new line.
    for column, said in ((to_agent, "Hello, good morning."), (to_caller, "Gracias por llamar.")):
        page.wait_for_selector(f"{column} li.line:nth-child(2)", timeout=25_000)
        final = page.locator(f"{column} li.line").first
        assert final.get_attribute("class") == "line" and final.get_attribute("aria-busy") is None
        assert final.locator(".translation .text").inner_text() == said
    first = wait_text(page, "#call-duration", r"^\d+:\d\d$")
    wait_text(page, "#call-duration", rf"^(?!{first}$)\d+:\d\d$", timeout_s=3)  # it runs
    assert_accessible(page)
    shot = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") == "1" else tmp_shot
    page.screenshot(path=str(shot), animations="disabled")  # the caret, steady
    assert shot.stat().st_size > 10_000

    caller.hangup()
    wait_text(page, "#call-state", r"^Ended")
    assert page.locator("li.line[aria-busy]").count() == 0, "a line stayed open after the end"
    ended = f'#recent-calls a.call-link[data-sid="{caller.sid}"]'
    page.wait_for_selector(ended, timeout=10_000)
    assert "Ended" in page.locator(ended).inner_text()
    assert page.locator(f'#active-calls a.call-link[data-sid="{caller.sid}"]').count() == 0
    wait_call_over(bridge)

    # The transcript links work with the same cookie, and carry both directions.
    href = page.locator("#download-txt").get_attribute("href")
    assert href == f"/api/calls/{caller.sid}/transcript.txt"
    transcript = page.request.get(bridge.url + href)
    assert transcript.status == 200
    assert "Hello, good morning." in transcript.text()
    assert "Gracias por llamar." in transcript.text()

    page.click("text=Log out")
    page.wait_for_selector("#token")
    assert COOKIE not in {c["name"] for c in page.context.cookies()}
    assert errors == [], errors
    page.close()


def test_screenshot_is_linked_from_the_readme() -> None:
    assert "(docs/console.png)" in (ROOT / "README.md").read_text()
