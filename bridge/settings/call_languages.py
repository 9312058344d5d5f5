"""The languages a call is offered and spoken in: CALLER_LANGUAGES, AGENT_LANGUAGES and the
defaults, each checked against the languages table, the prompts and what the engine speaks;
with CONSENT_NOTICE=on, each must also have the consent notice."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bridge.settings import engine_choice as engines
from bridge.settings import values as val
from bridge.settings.languages import DEFAULT_LANGUAGES_FILE, LanguageFileError
from bridge.settings.prompts import DEFAULT_PROMPTS_FILE, PromptBook, PromptFileError, load_prompts
from bridge.settings.values import ConfigError


@dataclass(frozen=True, slots=True)
class LanguageSettings:
    caller_languages: tuple[str, ...]
    agent_languages: tuple[tuple[str, str], ...]
    languages_file: Path
    prompts_file: Path
    consent_notice: bool = False


def check_speakable(name: str, code: str, engine: str) -> None:
    """``code`` is a language the selected engine can speak to a listener."""
    allowed = engines.choice(engine).output_languages
    if allowed is not None and code not in allowed:
        raise ConfigError(
            f"{name}: {code!r} is not a language ENGINE={engine} can speak "
            f"({' '.join(sorted(allowed))})"
        )


def _check_language(name: str, code: str, engine: str, book: PromptBook) -> None:
    """A language the bridge will speak: in the table, speakable, with every prompt."""
    table = book.languages
    if code not in table:
        known = " ".join(table.codes)
        raise ConfigError(f"{name}: {code!r} is not a language of {table.path} ({known})")
    check_speakable(name, code, engine)
    missing = book.missing(code)
    if missing:
        raise ConfigError(f"{name}: {code!r} has no {', '.join(missing)} in {book.path}")


def _caller_languages(
    env: Mapping[str, str], engine: str, book: PromptBook, default: str
) -> tuple[str, ...]:
    raw = val.get(env, "CALLER_LANGUAGES")
    if raw is None:
        return (default,)
    codes = [c.strip().lower() for c in raw.split(",") if c.strip()]
    if not codes:
        raise ConfigError("CALLER_LANGUAGES: lists no language")
    by_digit: dict[str, str] = {}
    for code in codes:
        _check_language("CALLER_LANGUAGES", code, engine, book)
        if codes.count(code) > 1:
            raise ConfigError(f"CALLER_LANGUAGES: {code!r} is listed twice")
        digit = book.languages[code].digit
        if digit in by_digit:
            # One key must pick one language; the digits live in the table, so say where.
            raise ConfigError(
                f"CALLER_LANGUAGES: {by_digit[digit]} and {code} both use key {digit} in "
                f"{book.languages.path}; offer one of them or give one another digit there"
            )
        by_digit[digit] = code
    return tuple(codes)


def _agent_languages(
    env: Mapping[str, str], engine: str, book: PromptBook
) -> tuple[tuple[str, str], ...]:
    raw = val.get(env, "AGENT_LANGUAGES")
    pairs: dict[str, str] = {}
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        # rpartition: a sip: address may itself contain '=' (sip:a@b;transport=tls=de).
        number, sep, code = item.strip().rpartition("=")
        number, code = number.strip(), code.strip().lower()
        if not sep or not val.DIALABLE.match(number):
            raise ConfigError(f"AGENT_LANGUAGES: {item.strip()!r} is not number=language")
        if number in pairs:
            raise ConfigError(f"AGENT_LANGUAGES: {number} is listed twice")
        _check_language("AGENT_LANGUAGES", code, engine, book)
        pairs[number] = code
    return tuple(pairs.items())


def _check_consent_notice(book: PromptBook, languages: Iterable[str]) -> None:
    """Every language the bridge may speak to a party has the consent notice: one line naming
    each that lacks it, so one start-up lists them all (a party must never be connected without
    hearing it, nor hear it in another language than their own)."""
    lacking = [c for c in dict.fromkeys(languages) if book.missing(c, ("consent_notice",))]
    if lacking:
        names = ", ".join(repr(c) for c in lacking)
        raise ConfigError(
            f"CONSENT_NOTICE: on, but {names} {'has' if len(lacking) == 1 else 'have'} "
            f"no consent_notice in {book.path}"
        )


def language_settings(
    env: Mapping[str, str],
    engine: str,
    caller_language: str,
    agent_language: str,
    *,
    consent_notice: bool = False,
) -> LanguageSettings:
    languages_file = val.path(env, "LANGUAGES_FILE", DEFAULT_LANGUAGES_FILE)
    prompts_file = val.path(env, "PROMPTS_FILE", DEFAULT_PROMPTS_FILE)
    try:
        book = load_prompts(prompts_file, languages_file)
    except LanguageFileError as exc:
        raise ConfigError(f"LANGUAGES_FILE: {exc}") from None
    except PromptFileError as exc:
        raise ConfigError(f"PROMPTS_FILE: {exc}") from None
    _check_language("CALLER_LANGUAGE", caller_language, engine, book)
    _check_language("AGENT_LANGUAGE", agent_language, engine, book)
    caller_languages = _caller_languages(env, engine, book, caller_language)
    agent_languages = _agent_languages(env, engine, book)
    if consent_notice:
        spoken = (caller_language, *caller_languages, agent_language)
        _check_consent_notice(book, (*spoken, *(code for _, code in agent_languages)))
    return LanguageSettings(
        caller_languages=caller_languages,
        agent_languages=agent_languages,
        languages_file=languages_file,
        prompts_file=prompts_file,
        consent_notice=consent_notice,
    )
