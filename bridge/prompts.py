"""Spoken prompts: what the bridge says to each party, in their language.

The texts, the ``<Say>`` language and the voice for each language live in
``twiml/prompts.json`` so operators can reword them without touching code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal, get_args

PROMPTS_FILE = Path(__file__).resolve().parent.parent / "twiml" / "prompts.json"

PromptName = Literal[
    "connecting",
    "agent_unavailable",
    "interpreter_unavailable",
    "agent_intro",
    "all_busy",
    "not_allowed",
    "time_limit",
    "shutdown",
]
PROMPT_NAMES: tuple[PromptName, ...] = get_args(PromptName)


@dataclass(frozen=True, slots=True)
class Prompt:
    """One thing to say: its text and the ``<Say>`` ``language``/``voice`` to say it with."""

    text: str
    say_language: str
    voice: str


@cache
def _table() -> dict[str, dict[str, object]]:
    data = json.loads(PROMPTS_FILE.read_text(encoding="utf-8"))
    languages = data["languages"]
    for code, entry in languages.items():
        missing = [n for n in PROMPT_NAMES if n not in entry.get("prompts", {})]
        if missing:
            raise ValueError(f"{PROMPTS_FILE}: language {code!r} lacks prompts {missing}")
    return dict(languages)


def prompt_languages() -> frozenset[str]:
    """Language codes that have a full set of prompts."""
    return frozenset(_table())


def prompt(name: PromptName, language: str) -> Prompt:
    """The prompt ``name`` in ``language`` (a code from :func:`prompt_languages`)."""
    entry = _table()[language]
    texts = entry["prompts"]
    assert isinstance(texts, dict)
    return Prompt(
        text=str(texts[name]), say_language=str(entry["say_language"]), voice=str(entry["voice"])
    )
