"""Debian's ``chromium``, driven by Playwright, for the console's end-to-end test.

The browser is always the system package, never a build Playwright downloads itself
(``playwright install`` fetches from outside the package registries and fails where only they
are reachable); Playwright drives it through ``executable_path``. What is missing is installed
on the spot (``apt-get install chromium`` as root, ``pip install playwright``); only when that
cannot work does :func:`provision` return a reason to skip instead of a path.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

PLAYWRIGHT_REQUIREMENT = "playwright>=1.65.2"  # as in requirements-dev.txt
INSTALL_TIMEOUT_S = 900
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


def _run(command: list[str]) -> str | None:
    """Run an install step; on failure, its last output lines (the reason to report)."""
    try:
        done = subprocess.run(
            command,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(command)}: {exc}"
    if done.returncode != 0:
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        return f"{' '.join(command)} exited {done.returncode}: {tail}"
    return None


def _install_chromium() -> str | None:
    if shutil.which("apt-get") is None:
        return "Debian's chromium is not installed and there is no apt-get to install it"
    if os.geteuid() != 0:
        return "Debian's chromium is not installed, and installing it needs root (apt-get)"
    for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        failed = _run(step)
        if failed is not None:
            return f"cannot install Debian's chromium: {failed}"
    return None


def _install_playwright() -> str | None:
    try:
        importlib.import_module("playwright.sync_api")
        return None
    except ImportError:
        pass
    failed = _run([sys.executable, "-m", "pip", "install", "--quiet", PLAYWRIGHT_REQUIREMENT])
    if failed is not None:
        return f"cannot install Playwright for Python: {failed}"
    importlib.invalidate_caches()
    try:
        importlib.import_module("playwright.sync_api")
    except ImportError as exc:
        return f"Playwright installed but not importable: {exc}"
    return None


def provision() -> tuple[str | None, str]:
    """The chromium executable to drive, installing what is missing; or None and why not."""
    if _chromium() is None:
        failed = _install_chromium()
        if failed is not None:
            return None, failed
    path = _chromium()
    if path is None:
        return None, "apt-get installed chromium, but no chromium executable was found"
    failed = _install_playwright()
    if failed is not None:
        return None, failed
    return path, ""
