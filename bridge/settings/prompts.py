"""Spoken prompts: what the bridge says to each party, in their language.

The texts live in ``config/prompts.json`` (``PROMPTS_FILE``), one set per language, so
operators can reword them without touching code; the ``<Say>`` language and voice come from
the languages table. Two prompts are templates: ``agent_whisper`` names the caller's language
and ``menu_option`` a menu choice. Start-up checks that every configured language has every
prompt (:meth:`PromptBook.check`), so a call never meets a missing text. An optional prompt
(``consent_notice``) is needed only while the setting that says it is on (CONSENT_NOTICE).
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal, get_args

from bridge.settings.languages import DEFAULT_LANGUAGES_FILE, LanguageTable, load_languages

DEFAULT_PROMPTS_FILE = Path(__file__).resolve().parents[2] / "config" / "prompts.json"

PromptName = Literal[
    "connecting",
    "agent_unavailable",
    "interpreter_unavailable",
    "all_busy",
    "not_allowed",
    "time_limit",
    "shutdown",
    "instance_lost",
    "agent_whisper",
    "menu_option",
    "menu_retry",
    "menu_goodbye",
    "consent_notice",
]
PROMPT_NAMES: tuple[PromptName, ...] = get_args(PromptName)
# Said only when a setting asks for them (consent_notice: CONSENT_NOTICE=on), so a prompts file
# written before they existed still starts a bridge that does not say them.
OPTIONAL_PROMPTS: frozenset[PromptName] = frozenset({"consent_notice"})
REQUIRED_PROMPTS: tuple[PromptName, ...] = tuple(
    n for n in PROMPT_NAMES if n not in OPTIONAL_PROMPTS
)
# Placeholders each template must use; every other prompt is said exactly as written.
TEMPLATE_FIELDS: dict[str, frozenset[str]] = {
    "agent_whisper": frozenset({"caller_language"}),
    "menu_option": frozenset({"digit", "name"}),
}
REQUIRED_FIELDS: dict[str, frozenset[str]] = {
    "agent_whisper": frozenset({"caller_language"}),
    "menu_option": frozenset({"digit"}),
}


class PromptFileError(ValueError):
    """The prompts file is unusable, or lacks a text a configured language needs; one line."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """One thing to say: its text and the ``<Say>`` ``language``/``voice`` to say it with."""

    text: str
    say_language: str
    voice: str


def _fields(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


class PromptBook:
    """The texts of one prompts file, spoken with the voices of one languages table."""

    def __init__(self, path: Path, texts: dict[str, dict[str, str]], table: LanguageTable):
        self.path = path
        self.languages = table
        self._texts = texts

    def missing(
        self, language: str, names: Iterable[PromptName] = REQUIRED_PROMPTS
    ) -> list[PromptName]:
        """Which of ``names`` (default: every prompt that is not optional) ``language`` lacks
        (all of them if the file has no entry for it); a blank text counts as lacking."""
        texts = self._texts.get(language, {})
        return [name for name in names if not texts.get(name, "").strip()]

    def check(self, languages: Iterable[str]) -> None:
        """Raise :class:`PromptFileError` naming the first language lacking a prompt."""
        for code in languages:
            if code not in self.languages:
                raise PromptFileError(f"{code!r} is not in {self.languages.path}")
            missing = self.missing(code)
            if missing:
                raise PromptFileError(
                    f"{code!r} has no {', '.join(missing)} in {self.path} "
                    f"(every language the bridge speaks needs every prompt)"
                )

    def complete_languages(self) -> frozenset[str]:
        """Languages of the table that have every prompt that is not optional."""
        return frozenset(c for c in self.languages.codes if not self.missing(c))

    def prompt(self, name: PromptName, language: str, /, **fields: str) -> Prompt:
        """The prompt ``name`` in ``language``, with a template's ``fields`` filled in."""
        text = self._texts[language][name]
        if name in TEMPLATE_FIELDS:
            text = text.format(**fields)
        entry = self.languages[language]
        return Prompt(text=text, say_language=entry.say_language, voice=entry.voice)


def _check_templates(path: Path, code: str, texts: dict[str, str]) -> None:
    for name, text in texts.items():
        try:
            fields = _fields(text)
        except ValueError:
            raise PromptFileError(f"{path}: {code} {name!r} has unbalanced braces") from None
        unknown = fields - TEMPLATE_FIELDS.get(name, frozenset())
        lacking = REQUIRED_FIELDS.get(name, frozenset()) - fields
        if unknown:
            raise PromptFileError(
                f"{path}: {code} {name!r} has unknown placeholders {sorted(unknown)}"
            )
        if lacking:
            raise PromptFileError(f"{path}: {code} {name!r} lacks placeholders {sorted(lacking)}")


@cache
def load_prompts(
    path: Path = DEFAULT_PROMPTS_FILE, languages_path: Path = DEFAULT_LANGUAGES_FILE
) -> PromptBook:
    """Parse the prompts file; raises :class:`PromptFileError` (or the languages file's error).

    Only the file's shape is checked here: which languages must be complete depends on the
    settings, see :meth:`PromptBook.check`.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PromptFileError(f"{path}: cannot be read ({exc.strerror})") from None
    except ValueError as exc:
        raise PromptFileError(f"{path}: not valid JSON ({exc})") from None
    entries = document.get("prompts") if isinstance(document, dict) else None
    if not isinstance(entries, dict):
        raise PromptFileError(f"{path}: needs a 'prompts' object (language → name → text)")
    texts: dict[str, dict[str, str]] = {}
    for code, entry in entries.items():
        if not isinstance(entry, dict) or not all(isinstance(t, str) for t in entry.values()):
            raise PromptFileError(f"{path}: {code!r} must map prompt names to texts")
        unknown = sorted(set(entry) - set(PROMPT_NAMES))
        if unknown:
            raise PromptFileError(f"{path}: {code!r} has unknown prompts {', '.join(unknown)}")
        _check_templates(path, code, entry)
        texts[code] = dict(entry)
    return PromptBook(path, texts, load_languages(languages_path))


def prompt(name: PromptName, language: str, /, **fields: str) -> Prompt:
    """``name`` in ``language`` from the default files (the bridge uses its configured book)."""
    return load_prompts().prompt(name, language, **fields)
