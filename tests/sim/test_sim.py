"""The call simulator (``python -m bridge.sim``) and the demo (``make demo``) against a real
bridge under gunicorn, and against a tiny bridge that breaks the Media Streams protocol."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import threading
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.sync.server import ServerConnection, serve

from bridge.sim.__main__ import main as sim_main
from bridge.sim.demo import bridge_environment
from bridge.sim.session import SimOptions, Simulator
from bridge.sim.wav import DEMO_AGENT_WAV, DEMO_CALLER_WAV, to_twilio_ulaw
from bridge.sim.webhooks import sign
from tests.bridge_process import ACCOUNT_SID, AUTH_TOKEN, free_port, run_bridge
from tests.call_helpers import envelope
from tests.fakes.audio import dominant_frequency, ulaw_to_pcm16
from tests.fakes.openai_translate import FakeTranslationServer, tone_for

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "sim-test-admin-token-5e1d"


def read_heard(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        assert wav.getframerate() == 8000
        assert wav.getnchannels() == 1
        assert wav.getsampwidth() == 2
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)


def best_lag_correlation(heard: np.ndarray, sent: np.ndarray) -> tuple[int, float]:
    """The 20 ms-block lag at which the heard envelope best matches the sent one, and the
    normalised correlation there."""
    a, b = envelope(heard, 8000), envelope(sent, 8000)
    best = (0, -1.0)
    for lag in range(len(a) - len(b) + 1):
        window = a[lag : lag + len(b)]
        if window.std() == 0:
            continue
        corr = float(np.corrcoef(window, b)[0, 1])
        best = max(best, (lag, corr), key=lambda x: x[1])
    return best


@pytest.mark.slow
def test_demo_runs_the_whole_telephony_path_offline(tmp_path: Path) -> None:
    """`python -m bridge.sim.demo` (what `make demo` runs) on a machine with no keys: starts
    the bridge with the relay engine, calls it, stops it, leaves everything in one folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TWILIO_"))}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "bridge.sim.demo"],
        cwd=tmp_path,  # the output lands under ./out, as it does in the checkout
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ENGINE=relay" in done.stdout
    folders = list((tmp_path / "out").glob("demo-*"))
    assert len(folders) == 1, folders
    out = folders[0]
    assert f"Everything is in out/{out.name}/" in done.stdout
    for name in ("caller_heard.wav", "agent_heard.wav", "transcript.txt", "report.txt"):
        assert (out / name).is_file(), name
    assert "Listening at" in (out / "bridge.log").read_text()  # gunicorn's own start line

    report = json.loads((out / "report.json").read_text())
    assert report["ok"] is True, report
    assert report["engine"] == "relay"
    assert report["end_reason"] == "caller_hung_up"
    assert report["violations"] == []
    for leg in report["legs"]:
        assert leg["frames_sent"] > 400  # ≥ 8 s of 20 ms frames each way
        assert leg["frames_received"] > 400
        assert leg["marks_echoed"] > 0
    for delay in report["delays"]:
        assert 0 <= delay["delay_ms"] < 3000, delay  # generous: a shared 2-core machine

    # With the relay each party hears the other's own audio: the heard WAV's loudness follows
    # what the other party sent, shifted by the delay (loosely: on a loaded machine a late
    # frame leaves a gap in the playout and shifts what follows), and all of it arrives.
    for listener, speaker_wav in (("agent", DEMO_CALLER_WAV), ("caller", DEMO_AGENT_WAV)):
        heard = read_heard(out / f"{listener}_heard.wav")
        sent = ulaw_to_pcm16(to_twilio_ulaw(speaker_wav))
        _lag, corr = best_lag_correlation(heard, sent)
        assert corr > 0.5, (listener, corr)
        loud_heard = (envelope(heard, 8000) > 300).sum()
        loud_sent = (envelope(sent, 8000) > 300).sum()
        assert 0.9 * loud_sent <= loud_heard <= 1.1 * loud_sent, (listener, loud_heard, loud_sent)
    assert "Outcome: completed" in (out / "report.txt").read_text()


@pytest.mark.slow
def test_simulator_cli_translates_through_the_openai_stand_in_and_answers_the_menu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m bridge.sim` against a bridge with the real engine (talking to the OpenAI
    stand-in, whose translation is a tone per language) and a language menu."""
    rest_port, port = free_port(), free_port()
    env = {
        "TWILIO_API_BASE_URL": f"http://127.0.0.1:{rest_port}",
        "CALLER_LANGUAGES": "en,es,fr",
        "ADMIN_TOKEN": ADMIN_TOKEN,
    }
    with FakeTranslationServer() as openai:
        env.update(
            {"ENGINE": "openai", "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": openai.base_url}
        )
        with run_bridge(port, env, tmp_path) as bridge:
            monkeypatch.chdir(tmp_path)  # no .env from the checkout
            monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
            monkeypatch.setenv("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
            monkeypatch.setenv("ADMIN_TOKEN", ADMIN_TOKEN)
            out = io.StringIO()
            argv = ["--bridge", bridge.url, "--rest-port", str(rest_port)]
            argv += ["--out", str(tmp_path / "sim"), "--caller-language", "es", "--tail", "3"]
            code = sim_main(argv, out)
    printed = out.getvalue()
    assert code == 0, printed
    report = json.loads((tmp_path / "sim" / "report.json").read_text())
    assert report["menu_answer"] == "2"  # Spanish's key in config/languages.json
    assert report["engine"] == "openai"
    caller_prompts = report["legs"][0]["prompts"]
    assert any("español" in p.casefold() for p in caller_prompts), caller_prompts
    # The transcript arrived live over the admin API's event stream and was printed.
    assert report["transcript"], printed
    assert any("hello" in line for line in report["transcript"])
    assert report["transcript"][0] in printed
    for delay in report["delays"]:
        assert delay["delay_ms"] is not None and 0 <= delay["delay_ms"] < 3000, delay
        assert delay["bridge_delay_ms"] is not None
    # Each party heard the stand-in's tone for their own language: the caller Spanish.
    for listener, language in (("caller", "es"), ("agent", "en")):
        heard = read_heard(tmp_path / "sim" / f"{listener}_heard.wav")
        loud = heard[np.abs(heard) > 4000]
        assert len(loud) > 8000, listener  # over a second of translation
        frequency = dominant_frequency(heard, 8000)
        assert abs(frequency - tone_for(language)) < 15, (listener, frequency)


def test_fallback_url_apologises_and_hangs_up(tmp_path: Path) -> None:
    """The fallback `bridge.telephony.number` sets: signed like every webhook, answers with a Say
    and a Hangup in the lead language, dials nobody."""
    import requests

    port = free_port()
    with run_bridge(port, {"ENGINE": "relay"}, tmp_path) as bridge:
        url = f"{bridge.url}/twilio/fallback"
        form = {"CallSid": "CA" + "1" * 32, "ErrorCode": "11200", "ErrorUrl": "x"}
        signed = {"X-Twilio-Signature": sign(AUTH_TOKEN, url, form)}
        answer = requests.post(url, data=form, headers=signed, timeout=5)
        unsigned = requests.post(url, data=form, timeout=5)
    assert answer.status_code == 200
    assert "<Say" in answer.text and "<Hangup" in answer.text
    assert "interpretación no está disponible" in answer.text  # CALLER_LANGUAGE es: the default
    assert unsigned.status_code == 403


class _BrokenBridge:
    """A bridge that answers the voice webhook with a stream, then breaks every rule of the
    Media Streams protocol once and hangs up."""

    def __init__(self) -> None:
        self.ws = serve(self._stream, "127.0.0.1", 0)
        ws_port = self.ws.socket.getsockname()[1]
        twiml = (
            '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
            f'<Stream url="ws://127.0.0.1:{ws_port}/media"/></Connect></Response>'
        )

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = twiml.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"

    def _stream(self, ws: ServerConnection) -> None:
        sid = None
        for message in ws:
            data = json.loads(message)
            if data["event"] == "start":
                sid = data["streamSid"]
                break
        frame = base64.b64encode(b"\xff" * 100).decode()
        ws.send(b"\x00\x01")  # binary
        ws.send("{not json")
        ws.send(json.dumps({"event": "media", "streamSid": "MZwrong", "media": {"payload": ""}}))
        ws.send(json.dumps({"event": "dance", "streamSid": sid}))
        ws.send(json.dumps({"event": "media", "streamSid": sid, "media": {"payload": frame}}))
        ws.send(json.dumps({"event": "media", "streamSid": sid, "media": {"payload": "%%"}}))
        ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {}}))
        ws.close()

    @contextmanager
    def running(self) -> Iterator[_BrokenBridge]:
        threads = [
            threading.Thread(target=self.ws.serve_forever, daemon=True),
            threading.Thread(target=self.http.serve_forever, daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self.ws.shutdown()
            self.http.shutdown()
            self.http.server_close()
            for thread in threads:
                thread.join(5)


def test_simulator_reports_a_bridge_that_breaks_the_protocol(tmp_path: Path) -> None:
    with _BrokenBridge().running() as broken:
        options = SimOptions(
            bridge_url=broken.url,
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            caller_wav=DEMO_CALLER_WAV,
            agent_wav=DEMO_AGENT_WAV,
            out_dir=tmp_path / "out",
        )
        out = io.StringIO()
        with Simulator(options, out) as simulator:
            report = simulator.run_call()
    assert not report.ok
    assert report.outcome == "the bridge never dialled the agent"
    violations = "\n".join(report.violations)
    for expected in (
        "31950: binary frame",
        "31951: invalid JSON",
        "wrong streamSid 'MZwrong'",
        "unknown event 'dance'",
        "100 bytes: not whole 20 ms frames",
        "not base64",
        "mark without a name",
    ):
        assert expected in violations, (expected, violations)
    text = (tmp_path / "out" / "report.txt").read_text()
    assert "Protocol violations: 7" in text
    assert "No ADMIN_TOKEN" in out.getvalue()


def test_demo_uses_the_real_engine_when_a_key_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    env = bridge_environment(8000, "http://127.0.0.1:1", tmp_path, "token", "admin-token-long")
    assert env["ENGINE"] == "relay"
    assert "OPENAI_API_KEY" not in env
    assert env["DATABASE_URL"].startswith(f"sqlite:///{tmp_path}")  # inside the output folder
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real")
    env = bridge_environment(8000, "http://127.0.0.1:1", tmp_path, "token", "admin-token-long")
    assert (env["ENGINE"], env["OPENAI_API_KEY"]) == ("openai", "sk-real")
