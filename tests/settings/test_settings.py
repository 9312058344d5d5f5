"""Settings: defaults, the public contract's names, and one clear line per bad value."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.engines.registry import settings_from_env
from bridge.settings import engine_choice
from bridge.settings.env import ConfigError, Settings
from tests.bridge_process import run_gunicorn_once

ROOT = Path(__file__).resolve().parents[2]
SID = "AC" + "0" * 32
BASE = {
    "PUBLIC_BASE_URL": "https://bridge.example.com",
    "TWILIO_ACCOUNT_SID": SID,
    "TWILIO_AUTH_TOKEN": "token",
    "AGENT_NUMBER": "+15551230000",
    "OPENAI_API_KEY": "sk-test",
}


def settings(**overrides: str) -> Settings:
    env = {**BASE, **overrides}
    return settings_from_env({k: v for k, v in env.items() if v != "<unset>"}, env_file=None)


def test_reading_the_configuration_loads_no_vendor_sdk() -> None:
    """The gunicorn master reads (and checks) every setting before it forks: no SDK in it."""
    import subprocess

    script = (
        "import sys\n"
        "from bridge.engines.registry import settings_from_env\n"
        "for engine in ('openai', 'openai-realtime', 'auto', 'bland', 'soniox', 'relay'):\n"
        "    settings_from_env({**ENV, 'ENGINE': engine}, env_file=None)\n"
        "heavy = ('openai', 'websockets', 'socketio', 'flask', 'requests')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    env = {**BASE, "BLAND_API_KEY": "b", "SONIOX_API_KEY": "s"}
    out = subprocess.run(
        [sys.executable, "-c", f"ENV = {env!r}\n{script}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_defaults() -> None:
    s = settings()
    assert (s.port, s.caller_language, s.agent_language, s.engine) == (8000, "es", "en", "openai")
    assert s.twilio_api_base_url == "https://api.twilio.com"
    assert s.translation_model == "gpt-realtime-translate"
    assert s.agent_caller_id is None
    assert s.stream_url("/media") == "wss://bridge.example.com/media"
    assert s.public_url("/twilio/status") == "https://bridge.example.com/twilio/status"


def test_plain_http_origin_gives_ws_stream_urls() -> None:
    s = settings(PUBLIC_BASE_URL="http://127.0.0.1:8080/")
    assert s.stream_url("/media") == "ws://127.0.0.1:8080/media"


def test_relay_needs_no_openai_key() -> None:
    s = settings(ENGINE="relay", OPENAI_API_KEY="<unset>")
    assert s.engine == "relay" and s.openai_api_key is None


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"PUBLIC_BASE_URL": "<unset>"}, "PUBLIC_BASE_URL"),
        ({"PUBLIC_BASE_URL": "bridge.example.com"}, "PUBLIC_BASE_URL"),
        ({"PUBLIC_BASE_URL": "https://x.io/path"}, "PUBLIC_BASE_URL"),
        ({"TWILIO_ACCOUNT_SID": "<unset>"}, "TWILIO_ACCOUNT_SID"),
        ({"TWILIO_ACCOUNT_SID": "XY123"}, "TWILIO_ACCOUNT_SID"),
        ({"TWILIO_AUTH_TOKEN": "<unset>"}, "TWILIO_AUTH_TOKEN"),
        ({"AGENT_NUMBER": "<unset>"}, "AGENT_NUMBER"),
        ({"AGENT_NUMBER": "555-1234"}, "AGENT_NUMBER"),
        ({"AGENT_CALLER_ID": "nope"}, "AGENT_CALLER_ID"),
        ({"ENGINE": "babelfish"}, "ENGINE"),
        ({"OPENAI_API_KEY": "<unset>"}, "OPENAI_API_KEY"),
        ({"CALLER_LANGUAGE": "tr"}, "CALLER_LANGUAGE"),
        ({"AGENT_LANGUAGE": "xx"}, "AGENT_LANGUAGE"),
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"TWILIO_API_BASE_URL": "ftp://x"}, "TWILIO_API_BASE_URL"),
        ({"OPENAI_BASE_URL": "not a url"}, "OPENAI_BASE_URL"),
    ],
)
def test_bad_settings_name_the_variable(overrides: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(**overrides)
    message = str(info.value)
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message


def test_language_the_model_cannot_speak_is_explained() -> None:
    with pytest.raises(ConfigError, match="ENGINE=openai can speak"):
        settings(CALLER_LANGUAGE="tr")


def test_env_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("AGENT_LANGUAGE=fr\nCALLER_LANGUAGE=de\n")
    s = settings_from_env({**BASE, "CALLER_LANGUAGE": "it"}, env_file=env_file)
    assert (s.agent_language, s.caller_language) == ("fr", "it")


def test_settings_are_immutable() -> None:
    s = settings()
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


def test_gunicorn_refuses_bad_settings_with_one_line() -> None:
    """The Procfile's server prints one line naming the variable, no traceback, exit 2."""
    env = {"PATH": str(Path(sys.executable).parent), "HOME": "/tmp", **BASE, "ENGINE": "nope"}
    proc = run_gunicorn_once(env)
    assert proc.returncode == 2
    known = ", ".join(engine_choice.ENGINES)  # every registered engine, in registry order
    assert proc.stderr.strip() == f"configuration error: ENGINE: 'nope' is not one of {known}"
    assert "Traceback" not in proc.stderr + proc.stdout


def test_every_problem_is_named_in_one_line() -> None:
    """A first `make run` with nothing set lists every missing variable, not only the first."""
    with pytest.raises(ConfigError) as info:
        settings_from_env({"PORT": "eighty", "BRIDGE_THREADS": "abc"}, env_file=None)
    message = str(info.value)
    assert "\n" not in message
    named = [part.split(":")[0] for part in message.split("; ")]
    assert named == [
        "PUBLIC_BASE_URL",
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "AGENT_NUMBER",
        "OPENAI_API_KEY",
        "PORT",
        "BRIDGE_THREADS",
    ]
    assert message.startswith("PUBLIC_BASE_URL: required but not set (")


def test_a_language_problem_is_named_once_beside_the_others() -> None:
    with pytest.raises(ConfigError) as info:
        settings(CALLER_LANGUAGE="tr", AGENT_LANGUAGE="xx", LOG_LEVEL="loud")
    named = [part.split(":")[0] for part in str(info.value).split("; ")]
    assert named == ["CALLER_LANGUAGE", "AGENT_LANGUAGE", "LOG_LEVEL"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"BRIDGE_THREADS": "abc"}, "BRIDGE_THREADS: 'abc' is not a whole number"),
        ({"BRIDGE_THREADS": "2"}, "BRIDGE_THREADS: 2 is outside 4..10000"),
        ({"BRIDGE_WORKERS": "0"}, "BRIDGE_WORKERS: 0 is outside 1..64"),
        ({"WEB_CONCURRENCY": "many"}, "WEB_CONCURRENCY: 'many' is not a whole number"),
    ],
)
def test_server_settings_are_checked_like_the_others(
    overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        settings(**overrides)
    assert str(info.value) == message


def test_gunicorn_refuses_a_bad_thread_count_with_one_line() -> None:
    """BRIDGE_THREADS was read with int() in the gunicorn config: a traceback, not a line."""
    env = {"PATH": str(Path(sys.executable).parent), "HOME": "/tmp", **BASE}
    proc = run_gunicorn_once({**env, "BRIDGE_THREADS": "abc", "PORT": "x"})
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "configuration error: PORT: 'x' is not a whole number; "
        "BRIDGE_THREADS: 'abc' is not a whole number"
    )
    assert "Traceback" not in proc.stderr + proc.stdout


def gunicorn_config(cwd: Path, env: dict[str, str]) -> dict[str, object]:
    """What config/gunicorn.conf.py sets when gunicorn loads it from ``cwd`` (where a
    deployment's .env is) with the real environment ``env``."""
    path = str(ROOT / "config" / "gunicorn.conf.py")
    code = (
        f"import json, runpy; c = runpy.run_path({path!r}); "
        "print(json.dumps({k: c[k] for k in ('threads', 'workers', 'bind')}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={"PATH": str(Path(sys.executable).parent), "HOME": "/tmp", **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_gunicorn_reads_the_server_settings_from_dotenv_and_the_environment_wins(
    tmp_path: Path,
) -> None:
    (tmp_path / ".env").write_text(
        "BRIDGE_THREADS=48\nBRIDGE_WORKERS=3\nPORT=8123\n"
        "REDIS_URL=redis://127.0.0.1:1/0\nDATABASE_URL=postgresql://u:p@127.0.0.1:1/db\n"
    )
    config = gunicorn_config(tmp_path, {**BASE, "BRIDGE_THREADS": "40"})
    assert config == {"threads": 40, "workers": 3, "bind": "0.0.0.0:8123"}
    (tmp_path / ".env").write_text("WEB_CONCURRENCY=2\nREDIS_URL=redis://127.0.0.1:1/0\n")
    assert gunicorn_config(tmp_path, BASE)["workers"] == 2
    assert gunicorn_config(tmp_path, {**BASE, "WEB_CONCURRENCY": "5"})["workers"] == 5
