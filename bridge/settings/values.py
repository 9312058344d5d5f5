"""Reading one setting: the checks every setting shares, each raising :class:`ConfigError`
with one line that names the variable, and :class:`Findings`, which collects them all."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

_T = TypeVar("_T")
# Twilio can also dial SIP URIs and Twilio Client identities.
DIALABLE = re.compile(r"^(\+[1-9]\d{6,14}|sip:[^\s]+|client:[A-Za-z0-9_.-]+)$")


class ConfigError(ValueError):
    """A setting is missing or invalid; ``str()`` is one line fit for an operator."""


class Findings:
    """Every problem found in the settings, so one start-up names them all: a first run with
    nothing set lists every missing variable at once, not one per attempt."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def check(self, read: Callable[[], _T]) -> _T | None:
        """What ``read()`` returns, or None with its problem noted."""
        try:
            return read()
        except ConfigError as exc:
            self.problems.append(str(exc))
            return None

    def error(self) -> ConfigError:
        """One line: each problem, as its own check words it, joined by semicolons."""
        return ConfigError("; ".join(self.problems))


def get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def required(env: Mapping[str, str], name: str, hint: str) -> str:
    value = get(env, name)
    if value is None:
        raise ConfigError(f"{name}: required but not set ({hint})")
    return value


def whole_number(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = get(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}: {value} is outside {low}..{high}")
    return value


def base_url(name: str, raw: str, *, origin_only: bool) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name}: {raw!r} is not an http(s) URL")
    if parts.query or parts.fragment or (origin_only and parts.path not in ("", "/")):
        raise ConfigError(f"{name}: {raw!r} must be an origin like https://host[:port], no path")
    return raw.rstrip("/")


def decibels(env: Mapping[str, str], name: str, default: float | None, low: float) -> float | None:
    """A level in dB (``-14``, ``-14.5``) or ``off``; 0 or below, at least ``low``."""
    raw = get(env, name)
    if raw is None:
        return default
    if raw.lower() == "off":
        return None
    try:
        value = float(raw.removesuffix("dB").removesuffix("db").strip())
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a level in dB (e.g. -14) or off") from None
    if not low <= value <= 0:
        raise ConfigError(f"{name}: {value:g} dB is outside {low:g}..0 dB")
    return value


def seconds(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = get(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number of seconds") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}: {value:g} is outside {low:g}..{high:g}")
    return value


def choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = (get(env, name) or choices[0]).lower()
    if value not in choices:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(choices)}")
    return value


def path(env: Mapping[str, str], name: str, default: Path) -> Path:
    raw = get(env, name)
    return default if raw is None else Path(raw).expanduser().resolve()


def switch(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = get(env, name)
    if raw is None:
        return default
    if raw.lower() in ("on", "true", "yes", "1"):
        return True
    if raw.lower() in ("off", "false", "no", "0"):
        return False
    raise ConfigError(f"{name}: {raw!r} is not on or off")
