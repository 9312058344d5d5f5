"""The glossary file: its two kinds of entry, per-direction terms, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.settings.glossary import (
    DEFAULT_GLOSSARY_FILE,
    Glossary,
    GlossaryFileError,
    load_glossary,
)


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "glossary.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_the_shipped_glossary_loads_and_has_terms_both_ways() -> None:
    glossary = load_glossary(DEFAULT_GLOSSARY_FILE)
    assert ("invoice", "factura") in glossary.terms("en", "es")
    assert ("factura", "invoice") in glossary.terms("es", "en")
    assert ("Twilio", "Twilio") in glossary.terms("ja", "ko")


def test_terms_keep_file_order_and_match_primary_subtags(tmp_path: Path) -> None:
    glossary = load_glossary(
        write(
            tmp_path,
            {
                "terms": [
                    {"en": "hold", "pt": "espera"},
                    {"keep": "Acme  Cloud"},
                    {"en": "hold", "pt": "espera"},
                    {"en": "refund", "es": "reembolso"},
                ]
            },
        )
    )
    assert glossary.terms("en", "pt-BR") == [("hold", "espera"), ("Acme Cloud", "Acme Cloud")]
    assert glossary.terms("pt", "es") == [("Acme Cloud", "Acme Cloud")]
    assert glossary.terms("en", "en") == [("Acme Cloud", "Acme Cloud")]


def test_an_empty_glossary_has_no_terms(tmp_path: Path) -> None:
    glossary = load_glossary(write(tmp_path, {"terms": []}))
    assert not glossary and glossary.terms("en", "es") == []
    assert Glossary().terms("en", "es") == []


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ([], "needs a 'terms' list"),
        ({"terms": [{"en": "invoice"}]}, "two languages"),
        ({"terms": [{"keep": "X", "en": "y"}]}, "'keep' and other"),
        ({"terms": [{"english": "a", "es": "b"}]}, "language code"),
        ({"terms": [{"en": "", "es": "b"}]}, "non-empty string"),
        ({"terms": [{"en": "a" * 101, "es": "b"}]}, "longer than"),
        ({"terms": ["invoice"]}, "non-empty object"),
    ],
)
def test_a_bad_entry_is_one_line(tmp_path: Path, document: object, complaint: str) -> None:
    with pytest.raises(GlossaryFileError, match=complaint) as info:
        load_glossary(write(tmp_path, document))
    assert "\n" not in str(info.value)


def test_unreadable_or_broken_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(GlossaryFileError, match="cannot be read"):
        load_glossary(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(GlossaryFileError, match="not valid JSON"):
        load_glossary(broken)
