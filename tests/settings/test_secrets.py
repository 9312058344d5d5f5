"""No secret prints: not in repr or str of the settings, the engines' configs or Twilio access,
and every one is listed for the log handler to mask (bridge/ops/logs.py)."""

from __future__ import annotations

import logging

import pytest

from bridge.engines.registry import settings_from_env
from bridge.settings.env import ConfigError, Settings, twilio_access

SID = "AC" + "0" * 32
AUTH = "twilio-auth-secret-0a1b2c"
OPENAI = "sk-openai-secret-3d4e5f"
ADMIN = "admin-secret-6a7b8c9d0e"
METRICS = "metrics-secret-1f2a3b4c"
DB_PASSWORD = "db-pass-w0rd-5e6f"
REDIS_PASSWORD = "redis-pass-w0rd-7a8b"
BASE = {
    "PUBLIC_BASE_URL": "https://bridge.example.com",
    "TWILIO_ACCOUNT_SID": SID,
    "TWILIO_AUTH_TOKEN": AUTH,
    "AGENT_NUMBER": "+15551230000",
    "OPENAI_API_KEY": OPENAI,
    "ADMIN_TOKEN": ADMIN,
    "METRICS_TOKEN": METRICS,
    "DATABASE_URL": f"postgresql://bridge:{DB_PASSWORD}@db.example.com/bridge",
    "REDIS_URL": f"redis://:{REDIS_PASSWORD}@redis.example.com:6379/0",
}
COMMON = (AUTH, OPENAI, ADMIN, METRICS, DB_PASSWORD, REDIS_PASSWORD)
ENGINE_KEYS = {
    "openai": {},
    "openai-realtime": {},
    "bland": {"BLAND_API_KEY": "bland-secret-9c0d1e"},
    "soniox": {"SONIOX_API_KEY": "soniox-secret-2f3a4b"},
    "gpt-translator": {"GPT_TRANSLATOR_API_KEY": "gptt-secret-5c6d7e"},
}


def settings(engine: str) -> Settings:
    return settings_from_env({**BASE, "ENGINE": engine, **ENGINE_KEYS[engine]}, env_file=None)


@pytest.mark.parametrize("engine", sorted(ENGINE_KEYS))
def test_no_secret_in_repr_or_str(engine: str) -> None:
    s = settings(engine)
    secrets = COMMON + tuple(ENGINE_KEYS[engine].values())
    for shown in (repr(s), str(s), repr(s.engine_config), str(s.engine_config), f"{s}"):
        for secret in secrets:
            assert secret not in shown, (engine, secret)
    assert "bridge.example.com" in repr(s)  # what is not secret still shows


@pytest.mark.parametrize("engine", sorted(ENGINE_KEYS))
def test_every_secret_is_listed_for_masking(engine: str) -> None:
    listed = set(settings(engine).secret_values())
    assert set(COMMON + tuple(ENGINE_KEYS[engine].values())) <= listed


def test_twilio_access_does_not_print_the_auth_token() -> None:
    access = twilio_access(BASE)
    assert AUTH not in repr(access) and access.auth_token == AUTH


def test_a_secret_logged_by_mistake_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    """Through the bridge's own handler: even a line that formats a key shows none."""
    import io

    from bridge.ops.logs import REDACTED, RedactingFormatter

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    formatter = RedactingFormatter(logging.Formatter("%(message)s"))
    formatter.add_secrets(settings("openai").secret_values())
    handler.setFormatter(formatter)
    logger = logging.getLogger("test-secrets-masked")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("connecting with %s to %s", OPENAI, BASE["REDIS_URL"])
        try:
            raise ConfigError(f"bad token {ADMIN}")
        except ConfigError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert OPENAI not in text and REDIS_PASSWORD not in text and ADMIN not in text
    assert text.count(REDACTED) == 3 and "redis.example.com" in text


def test_a_short_metrics_token_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_env({**BASE, "METRICS_TOKEN": "short"}, env_file=None)
    assert str(info.value).startswith("METRICS_TOKEN: too short")


def test_log_speech_is_off_unless_switched_on() -> None:
    assert settings("openai").log_speech is False
    on = settings_from_env({**BASE, "LOG_SPEECH": "on"}, env_file=None)
    assert on.log_speech is True
    with pytest.raises(ConfigError, match="LOG_SPEECH"):
        settings_from_env({**BASE, "LOG_SPEECH": "maybe"}, env_file=None)
