"""The languages the bridge offers: ``config/languages.json``, loaded and checked once.

Each entry says how the bridge speaks the language (the ``<Say>`` language and voice), how a
caller picks it in the language menu (its keypad digit, its names) and how every other
language is called in it (for the agent's whisper). Loading is pure and cached per file, so
settings validation and the running bridge share one parsed table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DEFAULT_LANGUAGES_FILE = Path(__file__).resolve().parents[2] / "config" / "languages.json"
DTMF_DIGITS = frozenset("0123456789")


class LanguageFileError(ValueError):
    """The languages file is missing, not JSON, or an entry is incomplete; one line."""


@dataclass(frozen=True, slots=True)
class Language:
    """One language the bridge can speak and offer."""

    code: str
    digit: str
    name: str  # in itself: what the menu says and what a caller may answer
    say_language: str
    voice: str
    speech_language: str  # the <Gather> recogniser's language (BCP-47)
    also_called: tuple[str, ...]
    names: Mapping[str, str]  # every language's name in this one, used mid-sentence

    def name_of(self, code: str) -> str:
        """The name of language ``code`` in this language (e.g. es: en → "inglés")."""
        return self.names[code]


class LanguageTable:
    """Every language of the file, by code, in file order."""

    def __init__(self, path: Path, languages: Mapping[str, Language]) -> None:
        self.path = path
        self._languages = dict(languages)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(self._languages)

    def __contains__(self, code: object) -> bool:
        return code in self._languages

    def __getitem__(self, code: str) -> Language:
        return self._languages[code]

    def spoken_names(self, code: str) -> tuple[str, ...]:
        """Every name a caller might say for ``code``: in itself, in each table language, and
        any ``also_called`` — a caller may well name their language in English or in the
        language of the first menu line."""
        language = self._languages[code]
        names = [language.name, *(other.names[code] for other in self._languages.values())]
        names.extend(language.also_called)
        return tuple(dict.fromkeys(names))


def _text(path: Path, code: str, entry: Mapping[str, object], field: str) -> str:
    value = entry.get(field)
    if not isinstance(value, str) or not value.strip():
        raise LanguageFileError(f"{path}: language {code!r} needs a non-empty {field!r}")
    return value.strip()


def _language(path: Path, code: str, entry: object, codes: list[str]) -> Language:
    if not isinstance(entry, dict):
        raise LanguageFileError(f"{path}: language {code!r} is not an object")
    digit = _text(path, code, entry, "digit")
    if digit not in DTMF_DIGITS:
        raise LanguageFileError(f"{path}: language {code!r} digit {digit!r} is not 0-9")
    names = entry.get("names")
    if not isinstance(names, dict) or not all(isinstance(v, str) and v for v in names.values()):
        raise LanguageFileError(f"{path}: language {code!r} needs 'names' (code → name)")
    missing = [c for c in codes if c not in names]
    if missing:
        raise LanguageFileError(f"{path}: language {code!r} does not name {', '.join(missing)}")
    also = entry.get("also_called", [])
    if not isinstance(also, list) or not all(isinstance(a, str) and a for a in also):
        raise LanguageFileError(f"{path}: language {code!r} 'also_called' must list names")
    return Language(
        code=code,
        digit=digit,
        name=_text(path, code, entry, "name"),
        say_language=_text(path, code, entry, "say_language"),
        voice=_text(path, code, entry, "voice"),
        speech_language=_text(path, code, entry, "speech_language"),
        also_called=tuple(also),
        names={c: str(names[c]) for c in codes},
    )


@cache
def load_languages(path: Path = DEFAULT_LANGUAGES_FILE) -> LanguageTable:
    """Parse and check the languages file; raises :class:`LanguageFileError`."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LanguageFileError(f"{path}: cannot be read ({exc.strerror})") from None
    except ValueError as exc:
        raise LanguageFileError(f"{path}: not valid JSON ({exc})") from None
    entries = document.get("languages") if isinstance(document, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise LanguageFileError(f"{path}: needs a non-empty 'languages' object")
    codes = list(entries)
    return LanguageTable(
        path, {code: _language(path, code, entries[code], codes) for code in codes}
    )
