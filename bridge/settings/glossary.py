"""Terms an interpreter must keep or translate a given way: ``config/glossary.json``.

The file (``GLOSSARY_FILE``) lists entries of two kinds::

    {"terms": [
        {"keep": "Acme Cloud"},                                  # said as is in every language
        {"en": "invoice", "es": "factura", "fr": "facture"}      # one term, its form per language
    ]}

An entry with forms in several languages gives a pair for every two of them, both ways; an
entry naming exactly two languages is a pair-specific term. Engines ask for the pairs of one
direction with :meth:`Glossary.terms`; what they do with them is theirs (the realtime
interpreter puts them in its instructions, Soniox sends ``translation_terms``).

Loading is pure and cached per file, so settings validation at start-up and every engine share
one parsed glossary; a bad file stops start-up with one line naming ``GLOSSARY_FILE``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DEFAULT_GLOSSARY_FILE = Path(__file__).resolve().parents[2] / "config" / "glossary.json"
# Language codes as the engines take them: ISO 639-1/-3, optionally with a region (pt-BR).
_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
# Terms go into prompts and vendor requests: a term is a few words, never a paragraph.
MAX_TERM_CHARS = 100
MAX_ENTRIES = 500


class GlossaryFileError(ValueError):
    """The glossary file is unreadable or an entry is malformed; ``str()`` is one line."""


@dataclass(frozen=True, slots=True)
class GlossaryEntry:
    """One term: kept verbatim (``keep``) or its form in each language it names."""

    keep: str | None
    forms: tuple[tuple[str, str], ...]  # (language code, the term in it)


@dataclass(frozen=True, slots=True)
class Glossary:
    """Every entry of a glossary file, in file order."""

    entries: tuple[GlossaryEntry, ...] = ()

    def terms(self, source_language: str, target_language: str) -> list[tuple[str, str]]:
        """``(term as the speaker says it, how the listener must hear it)`` for one direction,
        in file order: every ``keep`` term as itself, and every entry with a form in both
        languages. Language codes match on their primary subtag (``pt-BR`` finds ``pt``)."""
        source, target = _primary(source_language), _primary(target_language)
        found: list[tuple[str, str]] = []
        for entry in self.entries:
            if entry.keep is not None:
                found.append((entry.keep, entry.keep))
                continue
            forms = {_primary(code): text for code, text in entry.forms}
            if source in forms and target in forms and source != target:
                found.append((forms[source], forms[target]))
        return list(dict.fromkeys(found))

    def __bool__(self) -> bool:
        return bool(self.entries)


def _primary(code: str) -> str:
    return code.split("-", 1)[0].lower()


def _term(path: Path, index: int, key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise GlossaryFileError(f"{path}: term {index + 1} {key!r} must be a non-empty string")
    text = " ".join(value.split())
    if len(text) > MAX_TERM_CHARS:
        raise GlossaryFileError(
            f"{path}: term {index + 1} {key!r} is longer than {MAX_TERM_CHARS} characters"
        )
    return text


def _entry(path: Path, index: int, raw: object) -> GlossaryEntry:
    if not isinstance(raw, dict) or not raw:
        raise GlossaryFileError(f"{path}: term {index + 1} must be a non-empty object")
    if "keep" in raw:
        if len(raw) != 1:
            raise GlossaryFileError(f"{path}: term {index + 1} has 'keep' and other keys")
        return GlossaryEntry(_term(path, index, "keep", raw["keep"]), ())
    for code in raw:
        if not _LANGUAGE_CODE.match(code):
            raise GlossaryFileError(
                f"{path}: term {index + 1} key {code!r} is neither 'keep' nor a language code"
            )
    if len(raw) < 2:
        raise GlossaryFileError(f"{path}: term {index + 1} needs forms in two languages or more")
    forms = tuple((code, _term(path, index, code, text)) for code, text in raw.items())
    return GlossaryEntry(None, forms)


@cache
def load_glossary(path: Path = DEFAULT_GLOSSARY_FILE) -> Glossary:
    """Parse and check a glossary file; raises :class:`GlossaryFileError`."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GlossaryFileError(f"{path}: cannot be read ({exc.strerror})") from None
    except ValueError as exc:
        raise GlossaryFileError(f"{path}: not valid JSON ({exc})") from None
    raw_terms = document.get("terms") if isinstance(document, dict) else None
    if not isinstance(raw_terms, list):
        raise GlossaryFileError(f"{path}: needs a 'terms' list (it may be empty)")
    if len(raw_terms) > MAX_ENTRIES:
        raise GlossaryFileError(f"{path}: more than {MAX_ENTRIES} terms")
    return Glossary(tuple(_entry(path, i, raw) for i, raw in enumerate(raw_terms)))
