"""The caller's language menu: what it says, and which language an answer picks.

Stateless on our side: the attempt number travels in the ``<Gather>`` action URL (which
Twilio signs with the rest of the URL), so a menu survives a restart and needs no clean-up
when a caller hangs up half-way. Pure apart from building TwiML.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence

from bridge.settings.languages import Language, LanguageTable
from bridge.settings.prompts import Prompt, PromptBook
from bridge.telephony.twiml import gather_menu, say_all_and_hang_up

MENU_ATTEMPTS = 3
# Seconds Twilio waits for an answer after the last option was said (its default is 5).
ANSWER_TIMEOUT_S = 6
# A spoken answer this close to a name counts ("espaniol" for "español"): recognisers are
# told the names as hints, but still spell a foreign word their own way.
FUZZY_CUTOFF = 0.84
# Letters NFKD does not decompose to an ASCII base.
_FOLD = str.maketrans({"đ": "d", "ð": "d", "ø": "o", "ł": "l", "æ": "ae", "œ": "oe", "ı": "i"})
_NOT_WORD = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    """Case, accents and punctuation folded away: "¡Español!" → "espanol"."""
    folded = unicodedata.normalize("NFKD", text.casefold().translate(_FOLD))
    bare = "".join(c for c in folded if not unicodedata.combining(c))
    return " ".join(_NOT_WORD.sub(" ", bare).split())


def _says(answer: str, name: str) -> bool:
    if not name:
        return False
    if name.isascii():
        return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", answer) is not None
    # Scripts without spaces (and Korean particles) attach words: "日本語です", "한국어요".
    return name in answer


def _close(answer: str, name: str) -> float:
    """Best similarity of ``name`` to any run of as many words in ``answer``."""
    words, width = answer.split(), len(name.split())
    runs = [" ".join(words[i : i + width]) for i in range(max(1, len(words) - width + 1))]
    return max(difflib.SequenceMatcher(None, run, name).ratio() for run in runs)


class LanguageMenu:
    """The menu over ``options`` (CALLER_LANGUAGES, in order; the first leads)."""

    def __init__(self, options: Sequence[str], prompts: PromptBook, action_url: str) -> None:
        self._table: LanguageTable = prompts.languages
        self._options: list[Language] = [self._table[code] for code in options]
        self._prompts = prompts
        self._action_url = action_url
        self._names = {
            o.code: [n for n in map(normalise, self._table.spoken_names(o.code)) if n]
            for o in self._options
        }

    @property
    def lead(self) -> Language:
        """The first language: it says the menu's "sorry" and sets the recogniser's language."""
        return self._options[0]

    def action(self, attempt: int) -> str:
        return f"{self._action_url}?attempt={attempt}"

    def offer(self, attempt: int) -> str:
        """The menu's TwiML for ``attempt`` (1-based); after a failure it starts with "sorry"."""
        lines: list[Prompt] = []
        if attempt > 1:
            lines.append(self._prompts.prompt("menu_retry", self.lead.code))
        for option in self._options:
            lines.append(
                self._prompts.prompt(
                    "menu_option", option.code, digit=option.digit, name=option.name
                )
            )
        hints = [o.name for o in self._options]
        hints += [self._table["en"].name_of(o.code) for o in self._options if "en" in self._table]
        return gather_menu(
            self.action(attempt),
            lines,
            hints=list(dict.fromkeys(hints)),
            speech_language=self.lead.speech_language,
            timeout_s=ANSWER_TIMEOUT_S,
        )

    def give_up(self) -> str:
        """Goodbye in every menu language: nobody knows yet which one this caller follows."""
        return say_all_and_hang_up(
            [self._prompts.prompt("menu_goodbye", o.code) for o in self._options]
        )

    def choose(self, digits: str, speech: str) -> str | None:
        """The language code an answer picks, or None (nothing, unknown or ambiguous)."""
        digits = digits.strip()
        if digits:
            return self._by_digit(digits[0])
        answer = normalise(speech)
        if not answer:
            return None
        if answer.isdigit() and len(answer) == 1:  # "2." from someone saying the number
            return self._by_digit(answer)
        exact = {
            code for code, names in self._names.items() if any(_says(answer, n) for n in names)
        }
        if exact:
            return exact.pop() if len(exact) == 1 else None
        scores = {
            code: max((_close(answer, n) for n in names if n.isascii()), default=0.0)
            for code, names in self._names.items()
        }
        best = sorted(scores.items(), key=lambda item: item[1], reverse=True)
        if best and best[0][1] >= FUZZY_CUTOFF and (len(best) == 1 or best[1][1] < FUZZY_CUTOFF):
            return best[0][0]
        return None

    def _by_digit(self, digit: str) -> str | None:
        return next((o.code for o in self._options if o.digit == digit), None)
