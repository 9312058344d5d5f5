"""Calls whose parts land on different instances (REDIS_URL; bridge/cluster/book.py).

Real bridges under gunicorn share a real Redis on loopback and one call store; the Twilio
stand-in's balancer sends the voice webhook, each leg's Media Stream and each status callback
to the instance the test picks. Without REDIS_URL nothing here runs: the rest of the suite is
the single-process bridge, unchanged.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from bench.load import run_load
from bridge.settings.env import ConfigError, Settings
from bridge.settings.prompts import prompt
from tests.bridge_process import ROOT, BridgeProcess, free_port
from tests.call_helpers import (
    BRIDGE_NUMBER,
    CALLER_NUMBER,
    LEAD_IN_S,
    agent_of,
    heard_seconds,
    speech,
    tone_ulaw,
    wait_streaming,
)
from tests.cluster_calls import ADMIN_TOKEN, Cluster, Plan, api, cluster_stack, kill_instance
from tests.fakes.audio import (
    AGENT_EN_8K_MULAW,
    CALLER_ES_8K_MULAW,
    dominant_frequency,
    load_wav,
    ulaw_silence,
    ulaw_to_pcm16,
)
from tests.fakes.openai_translate import FakeTranslationServer, tone_for
from tests.fakes.twilio import DialBehaviour, FakeCall
from tests.redis_server import redis_url

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis_for_tests() -> Iterator[str]:
    with redis_url() as url:
        yield url


@pytest.fixture(scope="module")
def trio(
    tmp_path_factory: pytest.TempPathFactory,
    redis_for_tests: str,
    openai_fake: FakeTranslationServer,
) -> Iterator[Cluster]:
    with cluster_stack(tmp_path_factory.mktemp("trio"), 3, redis_for_tests, openai_fake) as c:
        yield c


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory,
    redis_for_tests: str,
    openai_fake: FakeTranslationServer,
) -> Iterator[Cluster]:
    with cluster_stack(tmp_path_factory.mktemp("pair"), 2, redis_for_tests, openai_fake) as c:
        yield c


def started_on(cluster: Cluster, call: FakeCall) -> int:
    """The instance whose log says it took this call's stream."""
    assert call.stream is not None
    line = f"stream {call.stream.stream_sid} started"
    deadline = time.monotonic() + 5
    while not (found := [i for i, b in enumerate(cluster.bridges) if line in b.log()]):
        assert time.monotonic() < deadline, "no instance took the stream"
        time.sleep(0.05)
    assert len(found) == 1, f"stream started on {found}"
    return found[0]


def eventually(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for ``condition`` (polled every 0.1 s), failing with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def hears_translation(call: FakeCall, language: str) -> bool:
    """The party has heard enough audio, mostly the stand-in's tone for ``language``."""
    heard = ulaw_to_pcm16(call.heard_ulaw())
    return len(heard) > 8000 and abs(dominant_frequency(heard, 8000) - tone_for(language)) < 10


def interpreted_call(cluster: Cluster, plan: Plan) -> None:
    """A whole call, routed as ``plan`` says: both parties hear the other's translation,
    the caller hangs up, the agent's leg is ended, every instance lets go, one record."""
    cluster.route(plan)
    twilio = cluster.twilio
    twilio.default_dial = DialBehaviour(audio=speech(AGENT_EN_8K_MULAW, LEAD_IN_S + 0.5))
    caller = twilio.place_call(speech(CALLER_ES_8K_MULAW), from_=CALLER_NUMBER, to=BRIDGE_NUMBER)
    agent = agent_of(twilio, caller)
    wait_streaming(twilio, caller, agent)
    assert started_on(cluster, caller) == plan["stream:caller"]
    assert started_on(cluster, agent) == plan["stream:agent"]

    caller_speech_s = len(load_wav(CALLER_ES_8K_MULAW)[2]) / 8000
    eventually(
        lambda: hears_translation(agent, "en") and hears_translation(caller, "es"),
        LEAD_IN_S + caller_speech_s + 20,
        "both parties heard the other's translation",
    )
    assert caller.violations == [] and agent.violations == []

    caller.hangup()
    assert agent.wait_ended(10), "the agent leg was not ended"
    assert caller.said == [prompt("connecting", "es").text]
    cluster.wait_idle()
    record = cluster.record(caller.sid)
    assert record.summary.end_reason in ("caller_hung_up", "agent_hung_up")
    assert record.summary.agent_sid == agent.sid
    assert record.summary.caller_language == "es"  # written by the home instance
    assert {s.direction for s in record.segments} == {"caller_to_agent", "agent_to_caller"}
    kinds = {kind for kind, _ in cluster.sent_to}
    assert {"voice", "status", "stream:caller", "stream:agent"} <= kinds


def test_a_call_across_three_instances(trio: Cluster) -> None:
    """Webhook on A, the caller's stream on B, the agent's on C, callbacks taking turns."""
    plan: Plan = {
        "voice": 0,
        "stream:caller": 1,
        "stream:agent": 2,
        "status": (2, 0, 1),
        "amd": 1,
        "twiml": 0,
    }
    interpreted_call(trio, plan)
    statuses = {i for kind, i in trio.sent_to if kind == "status"}
    assert statuses == {0, 1, 2}, "status callbacks reached every instance"


BOTH_WAYS = {"caller_to_agent", "agent_to_caller"}


def api_until(
    bridge: BridgeProcess, sid: str, done: Callable[[Any], bool], what: str, timeout: float = 20.0
) -> Any:
    """The instance's ``/api/calls/{sid}`` once ``done`` holds for it."""
    deadline = time.monotonic() + timeout
    while not done(got := api(bridge, f"/api/calls/{sid}")):
        assert time.monotonic() < deadline, f"{bridge.url}: never {what}: {got}"
        time.sleep(0.2)
    return got


def directions(got: Any) -> set[str]:
    return {s["direction"] for s in got["segments"]}


def listed(bridge: BridgeProcess, sid: str) -> list[Any]:
    """The call's entries in the instance's ``/api/calls`` (first page)."""
    return [c for c in api(bridge, "/api/calls?limit=200")["calls"] if c["call_sid"] == sid]


def assert_told_over(cluster: Cluster, sid: str, reasons: tuple[str, ...]) -> None:
    """Every live instance answers with the ended record, its transcript from every
    instance, and lists the call as over."""
    for bridge in cluster.bridges:
        if bridge.proc.poll() is not None:
            continue
        got = api_until(bridge, sid, lambda c: c["ended_at"] is not None, "ended")
        assert got["active"] is False and got["end_reason"] in reasons, got
        assert directions(got) == BOTH_WAYS, got["segments"]
        entries = listed(bridge, sid)
        assert len(entries) == 1 and entries[0]["active"] is False, entries
        assert entries[0]["ended_at"] is not None


@contextmanager
def event_stream(bridge: BridgeProcess, sid: str) -> Iterator[Iterator[tuple[str, Any]]]:
    """The instance's ``/api/calls/{sid}/events``: (event name, data) as they come, and
    ("heartbeat", None) for each heartbeat."""
    with requests.get(
        f"{bridge.url}/api/calls/{sid}/events",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        stream=True,
        timeout=(5, 30),  # read: longer than the stream's 15 s heartbeat
    ) as response:
        assert response.status_code == 200, response.text

        def events() -> Iterator[tuple[str, Any]]:
            name = ""
            for raw in response.iter_lines():
                line = raw.decode()
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    yield name, json.loads(line.removeprefix("data: "))
                elif line.startswith(":"):
                    yield "heartbeat", None

        yield events()


def until_event(events: Iterator[tuple[str, Any]], wanted: str, timeout: float) -> Any:
    """The data of the next ``wanted`` event, or None if the stream ends or ``timeout``
    passes first (noticed at the next event or heartbeat)."""
    deadline = time.monotonic() + timeout
    for name, data in events:
        if name == wanted:
            return data
        if time.monotonic() > deadline:
            return None
    return None


def talked_both_ways(cluster: Cluster, home: BridgeProcess) -> tuple[FakeCall, FakeCall]:
    """A call admitted on ``home`` whose parties have both been heard and transcribed: every
    instance says it is in progress, and the home's answer holds both sides' transcript
    (each recorded by the instance holding that speaker's leg)."""
    twilio = cluster.twilio
    # Each party stays on the line after speaking (a party hangs up when its audio ends), so a
    # loaded machine that transcribes slowly still finds the call in progress.
    stay = ulaw_silence(8000 * 60)
    twilio.default_dial = DialBehaviour(audio=speech(AGENT_EN_8K_MULAW, LEAD_IN_S + 0.5) + stay)
    caller = twilio.place_call(
        speech(CALLER_ES_8K_MULAW) + stay, from_=CALLER_NUMBER, to=BRIDGE_NUMBER
    )
    agent = agent_of(twilio, caller)
    wait_streaming(twilio, caller, agent)
    got = api_until(
        home, caller.sid, lambda c: directions(c) == BOTH_WAYS, "transcribed both ways", 45
    )
    assert got["active"] is True and got["ended_at"] is None
    for bridge in cluster.bridges:
        got = api(bridge, f"/api/calls/{caller.sid}")
        assert got["active"] is True and got["ended_at"] is None, (bridge.url, got)
        assert [c["active"] for c in listed(bridge, caller.sid)] == [True], bridge.url
    return caller, agent


def test_every_instance_tells_the_truth_about_a_call(trio: Cluster) -> None:
    """Webhook on A, the streams on B and C: A's own events are only the call's start, and it
    lets go when B ends the call. Whichever instance is asked, the API says the call is in
    progress while it is, and once the caller hangs up, that it is over, with its transcript."""
    trio.route({"voice": 0, "stream:caller": 1, "stream:agent": 2, "status": 0, "amd": 0})
    caller, agent = talked_both_ways(trio, trio.bridges[0])
    # The console following the call on A (its live view saw the start) and on B (it holds the
    # caller's leg, but follows the call through the store and Redis): both streams say the
    # call is live, and end with the call, saying why.
    reasons = ("caller_hung_up", "agent_hung_up")
    with ExitStack() as stack:
        streams = [stack.enter_context(event_stream(b, caller.sid)) for b in trio.bridges[:2]]
        for events in streams:
            name, snapshot = next(events)
            assert name == "snapshot" and snapshot["active"] is True, snapshot
        caller.hangup()
        assert agent.wait_ended(10), "the agent leg was not ended"
        for index, events in enumerate(streams):
            ended = until_event(events, "ended", timeout=30)
            assert ended is not None, f"instance {index}'s event stream never said it ended"
            assert ended["reason"] in reasons, (index, ended)
    assert_told_over(trio, caller.sid, reasons)
    trio.wait_idle()


def test_every_instance_tells_the_truth_after_an_instance_is_lost(
    tmp_path: Path, redis_for_tests: str, openai_fake: FakeTranslationServer
) -> None:
    """As above, but C (the agent's leg, and where Twilio's callbacks go) is killed: B's
    heartbeat sees it gone and ends the call; A, the home, still answers with the truth."""
    with cluster_stack(tmp_path, 3, redis_for_tests, openai_fake) as cluster:
        plan: Plan = {"voice": 0, "stream:caller": 1, "stream:agent": 2, "status": 2, "amd": 2}
        cluster.route(plan)
        caller, _agent = talked_both_ways(cluster, cluster.bridges[0])
        kill_instance(cluster.bridges[2])
        assert caller.wait_ended(15), "the surviving leg was not ended"
        assert caller.said[-1] == prompt("instance_lost", "es").text
        assert_told_over(cluster, caller.sid, ("instance_lost",))
        cluster.wait_idle()


def test_every_key_expires(trio: Cluster, redis_for_tests: str) -> None:
    """Whatever the instances left in Redis after a call across all three expires on its
    own: no zombie calls."""
    trio.route({"voice": 0, "stream:caller": 1, "stream:agent": 2, "status": (2, 0, 1)})
    twilio = trio.twilio
    twilio.default_dial = DialBehaviour(audio=tone_ulaw(30))
    caller = twilio.place_call(tone_ulaw(30), from_=CALLER_NUMBER, to=BRIDGE_NUMBER)
    agent = agent_of(twilio, caller)
    wait_streaming(twilio, caller, agent)
    caller.hangup()
    assert agent.wait_ended(10), "the agent leg was not ended"
    trio.wait_idle()
    client = redis.Redis.from_url(redis_for_tests)
    keys = list(client.scan_iter("bridge:*"))
    assert any(k.startswith(b"bridge:instance:") for k in keys), keys
    assert client.exists(f"bridge:end:{caller.sid}"), "the call left its claim"
    forever = [k for k in keys if client.ttl(k) == -1]
    assert forever == [], f"keys without a TTL: {forever}"
    client.close()


def test_a_call_across_two_instances(pair: Cluster) -> None:
    """Webhook and the caller's stream on A, the agent's stream and the callbacks on B."""
    interpreted_call(pair, {"voice": 0, "stream:caller": 0, "stream:agent": 1, "status": 1})


def test_an_instance_lost_mid_call(
    tmp_path: Path, redis_for_tests: str, openai_fake: FakeTranslationServer
) -> None:
    """The instance holding the agent's leg dies: the caller hears why, the call ends, and
    the record says so."""
    with cluster_stack(tmp_path, 2, redis_for_tests, openai_fake) as pair:
        pair.route({"voice": 0, "stream:caller": 0, "stream:agent": 1, "status": 0, "amd": 0})
        twilio = pair.twilio
        twilio.default_dial = DialBehaviour(audio=tone_ulaw(30))
        caller = twilio.place_call(tone_ulaw(30), from_=CALLER_NUMBER, to=BRIDGE_NUMBER)
        agent = agent_of(twilio, caller)
        wait_streaming(twilio, caller, agent)
        eventually(lambda: heard_seconds(caller) > 1.0, 15, "the call under way")
        killed_at = time.monotonic()
        kill_instance(pair.bridges[1])

        assert agent.wait_ended(10), "Twilio ends the leg whose socket dropped"
        assert caller.wait_ended(15), "the surviving leg was not ended"
        assert caller.said[-1] == prompt("instance_lost", "es").text
        assert time.monotonic() - killed_at < 12
        record = pair.record(caller.sid)
        assert record.summary.end_reason == "instance_lost"
        assert "stopped" in record.summary.end_detail
        pair.wait_idle()


def test_an_instance_lost_with_the_callbacks_it_was_sent(
    tmp_path: Path, redis_for_tests: str, openai_fake: FakeTranslationServer
) -> None:
    """The dead instance was also the one Twilio's callbacks went to: nobody hears that the
    agent's leg ended; the caller's instance sees its peer's heartbeat stop instead."""
    with cluster_stack(tmp_path, 2, redis_for_tests, openai_fake) as cluster:
        cluster.route({"voice": 0, "stream:caller": 0, "stream:agent": 1, "status": 1, "amd": 1})
        twilio = cluster.twilio
        twilio.default_dial = DialBehaviour(audio=tone_ulaw(30))
        caller = twilio.place_call(tone_ulaw(30), from_=CALLER_NUMBER, to=BRIDGE_NUMBER)
        agent = agent_of(twilio, caller)
        wait_streaming(twilio, caller, agent)
        assert started_on(cluster, agent) == 1
        eventually(lambda: heard_seconds(caller) > 1.0, 15, "the call under way")
        killed_at = time.monotonic()
        kill_instance(cluster.bridges[1])

        assert caller.wait_ended(15), "the surviving leg was not ended"
        assert caller.said[-1] == prompt("instance_lost", "es").text
        assert time.monotonic() - killed_at < 12
        assert cluster.record(caller.sid).summary.end_reason == "instance_lost"
        cluster.wait_idle()


def test_a_rolling_restart_loses_no_call_that_fits_in_the_grace_period(
    tmp_path: Path, redis_for_tests: str, openai_fake: FakeTranslationServer
) -> None:
    """SIGTERM to the instance holding the agent's leg: the call goes on through the grace
    period and ends as its parties end it; the instance then exits by itself."""
    env = {"SHUTDOWN_GRACE_SECONDS": "8"}
    with cluster_stack(tmp_path, 2, redis_for_tests, openai_fake, env) as cluster:
        cluster.route({"voice": 0, "stream:caller": 0, "stream:agent": 1, "status": 0})
        twilio = cluster.twilio
        twilio.default_dial = DialBehaviour(audio=tone_ulaw(30))
        caller = twilio.place_call(tone_ulaw(30), from_=CALLER_NUMBER, to=BRIDGE_NUMBER)
        agent = agent_of(twilio, caller)
        wait_streaming(twilio, caller, agent)
        assert started_on(cluster, agent) == 1  # bound there, not only on its way
        eventually(lambda: heard_seconds(agent) > 0.5, 15, "the agent hearing the call")
        leaving = cluster.bridges[1]
        # As a platform stopping a host signals every process: the worker hears SIGTERM from
        # it and again from its master, the second inside the first's handler.
        os.kill(leaving.worker_pid(), signal.SIGTERM)
        leaving.proc.send_signal(signal.SIGTERM)
        heard = heard_seconds(agent)
        eventually(
            lambda: heard_seconds(agent) > heard + 1.5,
            15,
            "the leaving instance went on playing its leg through the grace period",
        )
        assert not caller.ended.is_set()

        caller.hangup()
        assert agent.wait_ended(10) and caller.wait_ended(5)
        assert prompt("shutdown", "es").text not in caller.said
        assert prompt("shutdown", "en").text not in agent.said
        assert cluster.record(caller.sid).summary.end_reason == "caller_hung_up"
        assert leaving.proc.wait(timeout=15) == 0, "it left once its last call ended"
        assert "Traceback" not in leaving.log(), leaving.log()


def test_several_workers_on_one_host(
    tmp_path: Path, redis_for_tests: str, openai_fake: FakeTranslationServer
) -> None:
    """BRIDGE_WORKERS=2 behind one port: requests land on either worker, as the kernel picks."""
    with cluster_stack(
        tmp_path, 1, redis_for_tests, openai_fake, {"BRIDGE_WORKERS": "2"}
    ) as cluster:
        log = cluster.bridges[0].log
        assert cluster.twilio.wait_for(lambda: log().count("cluster: instance") == 2, 10), log()
        interpreted_call(cluster, {"voice": 0, "stream:caller": 0, "stream:agent": 0})


def test_redis_url_is_checked_and_never_shown() -> None:
    base = {
        "PUBLIC_BASE_URL": "https://bridge.example.com",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "token",
        "AGENT_NUMBER": "+15551230000",
        "ENGINE": "relay",
    }
    assert Settings.from_env(base, env_file=None).redis_url is None
    url = "redis://:s3cret@redis.internal:6379/0"
    s = Settings.from_env({**base, "REDIS_URL": url}, env_file=None)
    assert s.redis_url == url and "s3cret" not in repr(s)
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**base, "REDIS_URL": "http://:s3cret@x"}, env_file=None)
    assert str(info.value).startswith("REDIS_URL: ") and "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("env", "workers", "warning"),
    [
        ({}, 1, False),
        ({"BRIDGE_WORKERS": "3"}, 1, True),  # no REDIS_URL: legs must meet in one process
        ({"BRIDGE_WORKERS": "3", "REDIS_URL": "redis://127.0.0.1:1/0"}, 3, False),
        ({"WEB_CONCURRENCY": "2", "REDIS_URL": "redis://127.0.0.1:1/0"}, 2, False),
    ],
)
def test_gunicorn_runs_several_workers_only_with_redis(
    env: dict[str, str], workers: int, warning: bool
) -> None:
    full = {
        "PATH": os.environ.get("PATH", ""),
        "PUBLIC_BASE_URL": "https://bridge.example.com",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "token",
        "AGENT_NUMBER": "+15551230000",
        "ENGINE": "relay",
        "DATABASE_URL": "postgresql://u:p@127.0.0.1:1/db",
        **env,
    }
    code = "import runpy; print(runpy.run_path('config/gunicorn.conf.py')['workers'])"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert int(done.stdout.split()[-1]) == workers
    assert ("ignored, running 1 worker" in done.stderr) == warning


def test_the_load_bench_spreads_over_two_instances(tmp_path: Path, redis_for_tests: str) -> None:
    """bench/load.py --instances 2 measures calls whose requests take turns between two
    instances (so the benchmark of several instances cannot silently rot)."""
    result = asyncio.run(
        run_load(1, 3.0, free_port(), tmp_path, redis_url=redis_for_tests, instances=2)
    )
    assert result.lat_in_own and result.lat_out, "no audio measured both ways"
    assert result.expected > 0 and result.heard > 0
