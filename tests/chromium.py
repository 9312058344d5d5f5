"""Debian's ``chromium``, driven by Playwright, for the console's end-to-end test.

The browser is always the system package, never a build Playwright downloads itself
(``playwright install`` fetches from outside the package registries and fails where only they
are reachable); Playwright drives it through ``executable_path``. Nothing is installed here:
a test that installed system packages as a side effect (as root, with apt-get) would change the
machine behind its owner's back. ``make system-deps`` installs chromium (CI runs it) and
``make test`` installs Playwright from the lock; when either is missing, :func:`provision`
returns the reason to skip instead of a path.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

# Headless in a container: no sandbox (no user namespaces as root), no GPU, and nothing that
# talks to Google's services on start (which would hang or slow down an offline machine).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    found = shutil.which("chromium")
    if found is not None:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def _playwright_missing() -> str | None:
    """Why Playwright for Python cannot be imported, or None when it can."""
    try:
        importlib.import_module("playwright.sync_api")
    except ImportError as exc:
        return f"Playwright is not importable ({exc}); make test installs it from the lock"
    return None


def provision() -> tuple[str | None, str]:
    """The chromium executable to drive; or None and why not (nothing is installed here)."""
    path = _chromium()
    if path is None:
        return None, "Debian's chromium is not installed (make system-deps installs it)"
    missing = _playwright_missing()
    if missing is not None:
        return None, missing
    return path, ""
