"""Settings: read once from the environment in the app factory, frozen, and injected.

Nothing here runs at import time. Missing or invalid values raise one :class:`ConfigError`
whose message is one line naming every such variable and what is wrong with it (joined by
semicolons, so a first run learns them all at once); the entry points print that line and exit
instead of showing a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from dotenv import dotenv_values

from bridge.settings import engine_choice as engines
from bridge.settings import privacy, services
from bridge.settings import values as val
from bridge.settings.call_languages import check_speakable, language_settings
from bridge.settings.engine_choice import OPENAI_TRANSLATE_LANGUAGES as OPENAI_OUTPUT_LANGUAGES
from bridge.settings.glossary import DEFAULT_GLOSSARY_FILE, GlossaryFileError, load_glossary
from bridge.settings.languages import DEFAULT_LANGUAGES_FILE
from bridge.settings.prompts import DEFAULT_PROMPTS_FILE
from bridge.settings.values import ConfigError

__all__ = ["OPENAI_OUTPUT_LANGUAGES", "ConfigError", "Settings"]
_T = TypeVar("_T")
# Reads the selected engine's own settings: (ENGINE, environment) -> that engine's config.
EngineConfigReader = Callable[[str, Mapping[str, str]], Any]
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the bridge is configured with. Immutable; build with :meth:`from_env`."""

    public_base_url: str
    twilio_account_sid: str
    # Every secret is kept out of repr (and so str): a settings object in a log line, a
    # traceback's locals or an error message must not carry one. secret_values() lists them
    # for the log handler, which masks them in any line (bridge/ops/logs.py).
    twilio_auth_token: str = field(repr=False)
    agent_number: str
    port: int = 8000
    twilio_api_base_url: str = "https://api.twilio.com"
    caller_language: str = "es"
    agent_language: str = "en"
    engine: str = "openai"
    # The selected engine's own settings (keys, base URLs, model, voice), as its reader (given
    # by bridge.engines.registry.settings_from_env) returned them. Out of repr: secrets.
    engine_config: Any = field(default=None, repr=False, compare=False)
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    translation_model: str = "gpt-realtime-translate"
    transcription_model: str | None = "gpt-realtime-whisper"
    agent_caller_id: str | None = None
    agent_dial_timeout_s: int = 30
    log_level: str = "INFO"
    log_format: str = "text"
    # LOG_SPEECH: for debugging only, logs what people said (transcripts, menu answers).
    log_speech: bool = False
    # REDACT: the kinds of number masked in transcripts (bridge/calls/redact.py); empty = off.
    redact: frozenset[str] = frozenset(privacy.REDACT_KINDS)
    session_max_s: int = 3300
    max_concurrent_calls: int = 50
    max_call_s: int = 14400
    allowed_callers: frozenset[str] = frozenset()
    shutdown_grace_s: int = 120
    # Listening experience (mixer, echo guard, backlog): see bridge/audio/mixer.py and the README.
    passthrough_db: float | None = -14.0
    duck_db: float = -12.0
    echo_guard_db: float | None = -30.0
    backlog_max_s: float = 3.0
    backlog_policy: str = "drop-oldest"
    # Languages and prompts (config/languages.json, config/prompts.json): see the README.
    caller_languages: tuple[str, ...] = ("es",)  # what the caller may choose; the first leads
    agent_languages: tuple[tuple[str, str], ...] = ()  # (number dialled, its agent's language)
    agent_machine_detection: bool = True
    # CONSENT_NOTICE: each party hears config/prompts.json's consent_notice, in their language,
    # before their stream connects (docs/security.md#consent-notice).
    consent_notice: bool = False
    languages_file: Path = DEFAULT_LANGUAGES_FILE
    prompts_file: Path = DEFAULT_PROMPTS_FILE
    # Terms engines with a glossary keep or translate a given way (bridge/settings/glossary.py).
    glossary_file: Path = DEFAULT_GLOSSARY_FILE
    # Call records and the admin API (bridge/records/store.py, bridge/web/api.py). Kept out of repr:
    # the URL may carry a database password, and the token is a secret.
    database_url: str = field(default=services.DEFAULT_DATABASE_URL, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    # RETENTION_DAYS: calls (and their transcripts) older than this are deleted; None keeps
    # them (RETENTION_DAYS=0 or off). Thirty: a month covers a billing cycle's disputes and a
    # supervisor's review, and what callers said is not kept longer than that needs.
    retention_days: int | None = privacy.DEFAULT_RETENTION_DAYS
    # METRICS_TOKEN: when set, /metrics wants ``Authorization: Bearer <it>``; else it is open.
    metrics_token: str | None = field(default=None, repr=False)
    # Several instances: shared call state and cross-instance audio (docs/scaling.md). None
    # keeps everything in this process, as a single host needs. Out of repr: it may hold a
    # password.
    redis_url: str | None = field(default=None, repr=False)
    # The server (config/gunicorn.conf.py): request threads per worker, and the worker
    # processes asked for (BRIDGE_WORKERS, else WEB_CONCURRENCY; only 1 without REDIS_URL).
    threads: int = 256
    workers: int = 1

    def secret_values(self) -> list[str]:
        """Every secret's value, for the log handler to mask wherever one appears: the tokens
        and keys, the passwords in DATABASE_URL and REDIS_URL, and the engine's own secrets
        (its config's fields kept out of repr)."""
        values = [self.twilio_auth_token, self.openai_api_key, self.admin_token]
        values += [
            self.metrics_token,
            *services.passwords(self.database_url),
            *services.passwords(self.redis_url),
        ]
        config = self.engine_config
        if is_dataclass(config) and not isinstance(config, type):
            values += [getattr(config, f.name) for f in fields(config) if not f.repr]
        return [v for v in values if isinstance(v, str) and v]

    @property
    def public_host(self) -> str:
        return urlsplit(self.public_base_url).netloc

    def stream_url(self, path: str) -> str:
        """The ``ws(s)://`` URL Twilio connects a Media Stream to (``wss`` behind https)."""
        scheme = "wss" if self.public_base_url.startswith("https:") else "ws"
        return f"{scheme}://{self.public_host}{path}"

    def public_url(self, path: str) -> str:
        return f"{self.public_base_url}{path}"

    @property
    def lead_language(self) -> str:
        """The language spoken before a caller has chosen one: the first of CALLER_LANGUAGES."""
        return self.caller_languages[0]

    def agent_language_for(self, number: str) -> str:
        """The language of the agent at ``number`` (AGENT_LANGUAGES, else AGENT_LANGUAGE)."""
        return dict(self.agent_languages).get(number, self.agent_language)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        env_file: str | Path | None = ".env",
        *,
        engine_config: EngineConfigReader | None = None,
    ) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``) over an optional .env file.

        Real environment variables win over the file, so a deployment can override it.
        ``engine_config`` reads the selected engine's own settings (the engines layer passes
        it: settings know no engine's code); without it ``engine_config`` stays None.
        """
        return _parse(read_environment(environ, env_file), engine_config)


def read_environment(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
) -> dict[str, str]:
    """``environ`` (default ``os.environ``) over an optional .env file: real variables win."""
    env: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        env.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    env.update(os.environ if environ is None else environ)
    return env


@dataclass(frozen=True, slots=True)
class TwilioAccess:
    """What a tool needs to act as (or on) this deployment's Twilio account: the bridge's
    public origin, the account's credentials, and where its REST requests go."""

    public_base_url: str
    account_sid: str
    auth_token: str = field(repr=False)
    api_base_url: str


def twilio_access(env: Mapping[str, str]) -> TwilioAccess:
    """The four Twilio settings, checked exactly as the bridge checks them at start-up."""
    found = val.Findings()
    public = found.check(
        lambda: val.base_url(
            "PUBLIC_BASE_URL",
            val.required(
                env, "PUBLIC_BASE_URL", "the https origin Twilio reaches, e.g. https://x.io"
            ),
            origin_only=True,
        )
    )
    sid = found.check(lambda: _account_sid(env))
    token = found.check(
        lambda: val.required(
            env, "TWILIO_AUTH_TOKEN", "the auth token that signs Twilio's requests"
        )
    )
    api = found.check(
        lambda: val.base_url(
            "TWILIO_API_BASE_URL",
            val.get(env, "TWILIO_API_BASE_URL") or "https://api.twilio.com",
            origin_only=True,
        )
    )
    if public is None or sid is None or token is None or api is None:
        raise found.error()
    return TwilioAccess(public, sid, token, api)


def _account_sid(env: Mapping[str, str]) -> str:
    sid = val.required(env, "TWILIO_ACCOUNT_SID", "your Twilio account SID, AC...")
    if not _ACCOUNT_SID.match(sid):
        raise ConfigError("TWILIO_ACCOUNT_SID: must be AC followed by 32 hex digits")
    return sid


def _allowed_callers(env: Mapping[str, str]) -> frozenset[str]:
    numbers = {n.strip() for n in (val.get(env, "ALLOWED_CALLERS") or "").split(",")} - {""}
    for number in numbers:
        if not _E164.match(number):
            raise ConfigError(f"ALLOWED_CALLERS: {number!r} is not an E.164 number")
    return frozenset(numbers)


def _agent_number(env: Mapping[str, str]) -> str:
    agent = val.required(env, "AGENT_NUMBER", "the E.164 number of the agent to dial, e.g. +1...")
    if not val.DIALABLE.match(agent):
        raise ConfigError(f"AGENT_NUMBER: {agent!r} is not an E.164 number (+15551234567)")
    return agent


def _caller_id(env: Mapping[str, str]) -> str | None:
    caller_id = val.get(env, "AGENT_CALLER_ID")
    if caller_id is not None and not _E164.match(caller_id):
        raise ConfigError(f"AGENT_CALLER_ID: {caller_id!r} is not an E.164 number")
    return caller_id


def _engine(env: Mapping[str, str]) -> str:
    engine = (val.get(env, "ENGINE") or "openai").lower()
    if engine not in engines.ENGINES:
        raise ConfigError(f"ENGINE: {engine!r} is not one of {', '.join(engines.ENGINES)}")
    return engine


def _log_level(env: Mapping[str, str]) -> str:
    level = (val.get(env, "LOG_LEVEL") or "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL: {level!r} is not DEBUG, INFO, WARNING or ERROR")
    return level


def _workers(env: Mapping[str, str]) -> int:
    """BRIDGE_WORKERS, else WEB_CONCURRENCY (what platforms set), else 1."""
    name = "BRIDGE_WORKERS" if val.get(env, "BRIDGE_WORKERS") else "WEB_CONCURRENCY"
    return val.whole_number(env, name, 1, 1, 64)


def _parse(env: Mapping[str, str], engine_config: EngineConfigReader | None) -> Settings:
    found = val.Findings()
    access = found.check(lambda: twilio_access(env))
    # Each setting is checked even when an earlier one failed; the first one missing or bad
    # stops nothing until all are known. Settings that depend on the engine wait for it.
    reads: dict[str, Callable[[], Any]] = {
        "agent_number": lambda: _agent_number(env),
        "agent_caller_id": lambda: _caller_id(env),
    }
    values: dict[str, Any] = {name: found.check(read) for name, read in reads.items()}
    engine = found.check(lambda: _engine(env))
    if engine is not None:
        values |= _engine_settings(env, engine, found, engine_config)
    transcription = val.get(env, "TRANSCRIPTION_MODEL") or "gpt-realtime-whisper"
    reads = {
        "openai_api_key": lambda: val.get(env, "OPENAI_API_KEY"),
        "openai_base_url": lambda: _openai_base_url(env),
        "port": lambda: val.whole_number(env, "PORT", 8000, 1, 65535),
        "translation_model": lambda: val.get(env, "TRANSLATION_MODEL") or "gpt-realtime-translate",
        "transcription_model": lambda: None if transcription.lower() == "off" else transcription,
        "agent_dial_timeout_s": lambda: val.whole_number(env, "AGENT_DIAL_TIMEOUT", 30, 5, 600),
        "log_level": lambda: _log_level(env),
        "log_format": lambda: val.choice(env, "LOG_FORMAT", ("text", "json")),
        "log_speech": lambda: val.switch(env, "LOG_SPEECH", default=False),
        "redact": lambda: privacy.redact_kinds(val.get(env, "REDACT")),
        "session_max_s": lambda: val.whole_number(env, "SESSION_MAX_SECONDS", 3300, 3, 86_400),
        "max_concurrent_calls": lambda: val.whole_number(
            env, "MAX_CONCURRENT_CALLS", 50, 1, 10_000
        ),
        "max_call_s": lambda: val.whole_number(env, "MAX_CALL_SECONDS", 14_400, 5, 86_400),
        "allowed_callers": lambda: _allowed_callers(env),
        "shutdown_grace_s": lambda: val.whole_number(env, "SHUTDOWN_GRACE_SECONDS", 120, 0, 3600),
        "duck_db": lambda: val.decibels(env, "DUCK_DB", -12.0, -60) or 0.0,
        "backlog_max_s": lambda: val.seconds(env, "BACKLOG_MAX_SECONDS", 3.0, 0.5, 60.0),
        "backlog_policy": lambda: val.choice(env, "BACKLOG_POLICY", ("drop-oldest", "clear")),
        "agent_machine_detection": lambda: val.switch(env, "AGENT_MACHINE_DETECTION", default=True),
        "glossary_file": lambda: _glossary_file(env),
        "database_url": lambda: services.database_url(env),
        "admin_token": lambda: services.token(env, "ADMIN_TOKEN"),
        "retention_days": lambda: privacy.retention_days(env),
        "metrics_token": lambda: services.token(env, "METRICS_TOKEN"),
        "redis_url": lambda: services.redis_url(env),
        # A call holds two request threads for its whole length, plus a few for webhooks.
        "threads": lambda: val.whole_number(env, "BRIDGE_THREADS", 256, 4, 10_000),
        "workers": lambda: _workers(env),
    }
    values |= {name: found.check(read) for name, read in reads.items()}
    if found.problems or access is None or engine is None:
        raise found.error()
    return Settings(
        public_base_url=access.public_base_url,
        twilio_account_sid=access.account_sid,
        twilio_auth_token=access.auth_token,
        twilio_api_base_url=access.api_base_url,
        engine=engine,
        **values,
    )


def _openai_base_url(env: Mapping[str, str]) -> str | None:
    raw = val.get(env, "OPENAI_BASE_URL")
    return None if raw is None else val.base_url("OPENAI_BASE_URL", raw, origin_only=False)


def _engine_settings(
    env: Mapping[str, str],
    engine: str,
    found: val.Findings,
    engine_config: EngineConfigReader | None,
) -> dict[str, Any]:
    """What depends on the engine: its own settings, the languages it must speak, and the
    listening defaults (the relay has no translation to mix its passthrough under)."""
    translates = engine != "relay"
    values: dict[str, Any] = {
        "engine_config": found.check(
            lambda: None if engine_config is None else engine_config(engine, env)
        ),
        "passthrough_db": found.check(
            lambda: val.decibels(env, "PASSTHROUGH_DB", -14.0 if translates else None, -60)
        ),
        "echo_guard_db": found.check(
            lambda: val.decibels(env, "ECHO_GUARD_DB", -30.0 if translates else None, -120)
        ),
    }
    # Read apart, so a bad value is named on its own and the languages are still checked.
    consent = found.check(lambda: val.switch(env, "CONSENT_NOTICE", default=False))
    caller = (val.get(env, "CALLER_LANGUAGE") or "es").lower()
    agent = (val.get(env, "AGENT_LANGUAGE") or "en").lower()
    known = len(found.problems)
    for name, code in (("CALLER_LANGUAGE", caller), ("AGENT_LANGUAGE", agent)):
        found.check(partial(check_speakable, name, code, engine))
    if len(found.problems) > known:
        return values  # the language files would only repeat it
    langs = found.check(
        lambda: language_settings(env, engine, caller, agent, consent_notice=bool(consent))
    )
    if langs is not None:
        values |= {
            "caller_language": caller,
            "agent_language": agent,
            "caller_languages": langs.caller_languages,
            "agent_languages": langs.agent_languages,
            "languages_file": langs.languages_file,
            "prompts_file": langs.prompts_file,
            "consent_notice": langs.consent_notice,
        }
    return values


# -- call records and the admin API ----------------------------------------------------------


# -- languages and prompts -------------------------------------------------------------------


def _glossary_file(env: Mapping[str, str]) -> Path:
    """GLOSSARY_FILE, parsed now so a bad glossary stops start-up, not the first call."""
    path = val.path(env, "GLOSSARY_FILE", DEFAULT_GLOSSARY_FILE)
    try:
        load_glossary(path)
    except GlossaryFileError as exc:
        raise ConfigError(f"GLOSSARY_FILE: {exc}") from None
    return path
