"""``python -m bridge.telephony.number`` against the Twilio stand-in's IncomingPhoneNumbers API,
through the real twilio SDK (TWILIO_API_BASE_URL rewritten as the bridge does)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from bridge.sim.carrier import TwilioSim
from bridge.telephony import number
from tests.bridge_process import ACCOUNT_SID, AUTH_TOKEN

NUMBER = "+15550002222"
NUMBER_SID = "PN" + "a" * 32
PUBLIC = "https://bridge.example.com"


@pytest.fixture
def twilio(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> Iterator[TwilioSim]:
    with TwilioSim(ACCOUNT_SID, AUTH_TOKEN, PUBLIC) as sim:
        sim.numbers.add(NUMBER, NUMBER_SID)
        monkeypatch.chdir(str(tmp_path))  # no .env from the checkout
        for name, value in {
            "PUBLIC_BASE_URL": PUBLIC,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_API_BASE_URL": sim.rest_base_url,
        }.items():
            monkeypatch.setenv(name, value)
        yield sim


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return number.main(list(argv), out), out.getvalue()


def test_dry_run_prints_the_changes_and_changes_nothing(twilio: TwilioSim) -> None:
    before = twilio.numbers.get(NUMBER_SID)
    code, printed = run(NUMBER, "--dry-run")
    assert code == 0, printed
    assert "3 field(s) would change (dry run)" in printed
    assert f"voice_url: https://demo.twilio.com/welcome/voice/ → {PUBLIC}/twilio/voice" in printed
    assert f"voice_fallback_url: (empty) → {PUBLIC}/twilio/fallback" in printed
    assert f"status_callback: (empty) → {PUBLIC}/twilio/status" in printed
    assert "voice_method: POST (unchanged)" in printed
    assert twilio.numbers.get(NUMBER_SID) == before
    assert [r.method for r in twilio.rest_requests] == ["GET"]


def test_sets_voice_fallback_and_status_urls_then_has_nothing_to_do(twilio: TwilioSim) -> None:
    twilio.numbers.update(NUMBER_SID, {"VoiceMethod": ["GET"], "VoiceApplicationSid": ["AP1"]})
    code, printed = run(NUMBER)
    assert code == 0, printed
    assert "5 field(s) changed" in printed
    assert "voice_method: GET → POST" in printed
    assert "voice_application_sid: AP1 → (empty)" in printed  # a TwiML App would win
    resource = twilio.numbers.get(NUMBER_SID)
    assert resource["voice_url"] == f"{PUBLIC}/twilio/voice"
    assert resource["voice_method"] == "POST"
    assert resource["voice_fallback_url"] == f"{PUBLIC}/twilio/fallback"
    assert resource["voice_fallback_method"] == "POST"
    assert resource["status_callback"] == f"{PUBLIC}/twilio/status"
    assert resource["status_callback_method"] == "POST"
    assert resource["voice_application_sid"] is None
    update = next(r for r in twilio.rest_requests if r.method == "POST")
    assert update.path.endswith(f"/IncomingPhoneNumbers/{NUMBER_SID}.json")
    assert update.params["VoiceUrl"] == [f"{PUBLIC}/twilio/voice"]  # form-encoded, as Twilio

    code, printed = run(NUMBER)
    assert code == 0
    assert "0 field(s) changed" in printed


def test_fallback_url_can_be_another_instance(twilio: TwilioSim) -> None:
    code, printed = run(NUMBER, "--fallback-url", "https://standby.example.com/twilio/voice")
    assert code == 0, printed
    fallback = twilio.numbers.get(NUMBER_SID)["voice_fallback_url"]
    assert fallback == "https://standby.example.com/twilio/voice"


def test_unknown_number_and_bad_credentials_are_one_clear_line(
    twilio: TwilioSim, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("+15559999999")[0] == 1
    assert "+15559999999 is not a number on this account" in capsys.readouterr().err
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "wrong-token")
    assert run(NUMBER)[0] == 1
    assert "Twilio refused the credentials" in capsys.readouterr().err
    monkeypatch.delenv("PUBLIC_BASE_URL")
    assert run(NUMBER)[0] == 1
    assert "PUBLIC_BASE_URL" in capsys.readouterr().err


def test_a_number_on_a_sip_trunk_is_refused(twilio: TwilioSim) -> None:
    twilio.numbers.add("+15550003333", "PN" + "b" * 32, trunk_sid="TK" + "c" * 32)
    code, _ = run("+15550003333")
    assert code == 1
    assert twilio.numbers.get("PN" + "b" * 32)["voice_url"].startswith("https://demo.twilio")


def test_stand_in_answers_like_twilio(twilio: TwilioSim) -> None:
    """List pages, 404 errors and refused values, as Twilio's REST API renders them."""
    import requests

    base = f"{twilio.rest_base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/IncomingPhoneNumbers"
    auth = (ACCOUNT_SID, AUTH_TOKEN)
    page = requests.get(f"{base}.json", params={"PhoneNumber": NUMBER}, auth=auth, timeout=5)
    assert page.status_code == 200
    body = page.json()
    assert [n["sid"] for n in body["incoming_phone_numbers"]] == [NUMBER_SID]
    assert body["next_page_uri"] is None and body["page"] == 0
    missing = requests.post(f"{base}/PN{'0' * 32}.json", data={"VoiceUrl": "x"}, auth=auth)
    assert missing.status_code == 404
    assert missing.json()["code"] == 20404
    bad = requests.post(f"{base}/{NUMBER_SID}.json", data={"VoiceMethod": "PUT"}, auth=auth)
    assert bad.status_code == 400
