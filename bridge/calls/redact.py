"""Masks numbers said on a call (payment cards, IBANs, national IDs, phone numbers) in the
transcript before anything is published, so the store, the API, the downloads and the live
console never receive them (REDACT; docs/security.md, "Redaction").

Numbers are found as *runs*: digits and spoken digit words (English and Spanish, "four one one
one" / "cuatro uno uno uno") separated by spaces, dashes or ", ". A run is then classified by its
digits: a 13-19 digit run passing the Luhn check is a card; a run shaped like a US SSN is a
national ID; seven or more other digits are a phone number (or an account number: the mask does
not need to tell them apart). IBANs and Spanish DNI/NIE are matched on the written form and
checked by their own checksums, so a reference like "order 12" or a year stays as said.

Masks name the kind only ("[card]", not "[card ••••1111]"): nothing in a transcript needs the
last digits, and the last four of an SSN or a card are what account-recovery questions ask for.

The checksums come from python-stdnum (Luhn, IBAN with each country's format, DNI/NIE check
letters, the SSN's reserved ranges). Phone numbers are not validated (the ``phonenumbers``
library would): any long run is masked, which errs on the side a redactor should.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stdnum import iban, luhn
from stdnum.es import dni, nie
from stdnum.us import ssn

from bridge.settings.privacy import REDACT_KINDS

DEFAULT_KINDS = frozenset(REDACT_KINDS)

_WORD_DIGITS: dict[str, str] = {
    # English
    "zero": "0",
    "oh": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    # Spanish
    "cero": "0",
    "uno": "1",
    "una": "1",
    "dos": "2",
    "tres": "3",
    "cuatro": "4",
    "cinco": "5",
    "seis": "6",
    "siete": "7",
    "ocho": "8",
    "nueve": "9",
}
_WORDS = "|".join(sorted(_WORD_DIGITS, key=len, reverse=True))
# Possessive (\d++): a failed match must not retry every way of splitting a digit run.
_TOKEN = rf"(?:\d++|\b(?:{_WORDS})\b)"
# ", " separates spoken digits ("four, one, one"); a bare comma is a thousands separator
# ("1,500,000" is an amount, not a phone number), so it ends a run.
_SEP = r"(?:[ \t\-–]|,[ \t])"
_RUN = re.compile(rf"\+?{_TOKEN}(?:{_SEP}*{_TOKEN})*", re.IGNORECASE)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b", re.IGNORECASE)
_SPANISH_ID = re.compile(r"\b[XYZ]?\d{7,8}[ \-]?[A-Z]\b", re.IGNORECASE)
# What a live fragment holds back: a trailing run of number tokens and separators, and a last
# word that may be a digit word cut in two ("fo" + "ur"). Any other last word is shown at once.
_PREFIXES = "|".join(sorted({w[:i] for w in _WORD_DIGITS for i in range(1, len(w))}))
_TAIL = re.compile(rf"(?:{_TOKEN}{_SEP}*)*(?:\b(?:{_PREFIXES}))?\Z", re.IGNORECASE)
_SSN_SHAPE = re.compile(r"\d{3}[ -]\d{2}[ -]\d{4}\Z")
CARD_DIGITS = range(13, 20)
PHONE_MIN_DIGITS = 7


def _mask_iban(match: re.Match[str]) -> str:
    """The longest valid IBAN at the start of the match: the pattern also takes the words after
    it ("GB82 WEST 1234 5698 7654 32 ok"), and each country has its own length."""
    text = match.group()
    for end in range(len(text), 14, -1):
        if text[end - 1] != " " and iban.is_valid(text[:end]):
            return "[iban]" + text[end:]
    return text


def _spanish_id(text: str) -> bool:
    return bool(dni.is_valid(text) or nie.is_valid(text))


@dataclass(frozen=True, slots=True)
class Redactor:
    """Masks the chosen kinds in complete text; an empty ``kinds`` leaves text as it is."""

    kinds: frozenset[str] = DEFAULT_KINDS

    def redact(self, text: str) -> str:
        if not self.kinds or not text:
            return text
        if "iban" in self.kinds:
            text = _IBAN.sub(_mask_iban, text)
        if "national_id" in self.kinds:
            text = _SPANISH_ID.sub(
                lambda m: "[id]" if _spanish_id(m.group()) else m.group(),
                text,
            )
        return _RUN.sub(self._mask_run, text)

    def _mask_run(self, match: re.Match[str]) -> str:
        run = match.group()
        digits = "".join(
            t if t.isdigit() else _WORD_DIGITS[t.lower()]
            for t in re.findall(_TOKEN, run, re.IGNORECASE)
        )
        if "card" in self.kinds and len(digits) in CARD_DIGITS and luhn.is_valid(digits):
            return "[card]"
        ssn_like = len(digits) == 9 and "national_id" in self.kinds and ssn.is_valid(digits)
        # Nine bare digits are as often a phone number (Spain's are nine): an SSN is told by
        # its written 3-2-4 shape; either way the digits go.
        if ssn_like and _SSN_SHAPE.match(run):
            return "[id]"
        if "phone" in self.kinds and len(digits) >= PHONE_MIN_DIGITS:
            return "[phone]"
        return "[id]" if ssn_like else run


# A held tail longer than this is released (masked) anyway: a bounded delay on the live view.
MAX_HELD_CHARS = 160


@dataclass(slots=True)
class FragmentRedactor:
    """One stream of live fragments (a direction and kind): releases text whose numbers have
    ended, masked, and holds back a trailing run that the next fragment may continue.

    Not thread-safe: the call serialises access (its lock)."""

    redactor: Redactor
    held: str = ""
    last_ms: int = 0

    def push(self, text: str, offset_ms: int) -> str:
        """The masked text that can be shown now ("" while everything is held)."""
        if not self.redactor.kinds:
            return text
        self.last_ms = offset_ms
        buf = self.held + text
        tail = _TAIL.search(buf)
        cut = tail.start() if tail is not None else len(buf)
        if len(buf) - cut > MAX_HELD_CHARS:
            cut = len(buf)
        self.held = buf[cut:]
        return self.redactor.redact(buf[:cut])

    def flush(self) -> str:
        """Release whatever is held, masked (after a pause, or at the call's end)."""
        held, self.held = self.held, ""
        return self.redactor.redact(held)
