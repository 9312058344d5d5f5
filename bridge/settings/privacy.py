"""What is kept of what people said: which numbers are masked in transcripts (``REDACT``) and
for how long call records are kept (``RETENTION_DAYS``)."""

from __future__ import annotations

from collections.abc import Mapping

from bridge.settings import values as val

# Thirty days: a month covers a billing cycle's disputes and a supervisor's review, and what
# callers said is not kept longer than that needs.
DEFAULT_RETENTION_DAYS = 30
MAX_RETENTION_DAYS = 36_500
# The kinds of number masked in transcripts (bridge/calls/redact.py), all by default.
REDACT_KINDS = ("card", "iban", "national_id", "phone")


def redact_kinds(raw: str | None) -> frozenset[str]:
    """REDACT: unset, "on" or "all" → every kind; "off" → none; else a comma list of kinds."""
    text = (raw or "all").strip().lower()
    if text in ("off", "none"):
        return frozenset()
    if text in ("on", "all"):
        return frozenset(REDACT_KINDS)
    kinds = frozenset(k.strip() for k in text.split(",") if k.strip())
    if not kinds or kinds - set(REDACT_KINDS):
        raise val.ConfigError(f"REDACT: {raw!r} is not off, all or a list of {REDACT_KINDS}")
    return kinds


def retention_days(env: Mapping[str, str]) -> int | None:
    """RETENTION_DAYS: a whole number of days; 0 or ``off`` keeps calls for ever."""
    raw = val.get(env, "RETENTION_DAYS")
    if raw is not None and raw.lower() == "off":
        return None
    days = val.whole_number(env, "RETENTION_DAYS", DEFAULT_RETENTION_DAYS, 0, MAX_RETENTION_DAYS)
    return days or None
