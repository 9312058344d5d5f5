"""Twilio REST calls the bridge makes: dial the agent, end or redirect a call.

Uses the official ``twilio`` SDK. The SDK hard-codes ``https://api.twilio.com``; an HTTP client
subclass rewrites that origin to ``TWILIO_API_BASE_URL`` so staging and tests can point it
elsewhere without patching the SDK.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from bridge.settings.env import Settings

log = logging.getLogger(__name__)
TWILIO_API_ORIGIN = "https://api.twilio.com"
REST_TIMEOUT_S = 10.0
# Call statuses after which a call can no longer be changed (Twilio's Call resource docs).
FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
# Twilio error codes for "this call is no longer in progress" (21220) and "not found" (20404).
ALREADY_ENDED_CODES = frozenset({21220, 20404})


class TwilioRestError(RuntimeError):
    """A Twilio REST request failed (HTTP error from Twilio or no answer at all)."""


class _BaseUrlHttpClient(TwilioHttpClient):
    """Sends the SDK's requests to ``base_url`` instead of ``https://api.twilio.com``."""

    def __init__(self, base_url: str, timeout: float) -> None:
        super().__init__(timeout=timeout, logger=logging.getLogger("bridge.twilio_http"))
        self._base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if url.startswith(TWILIO_API_ORIGIN):
            url = self._base_url + url[len(TWILIO_API_ORIGIN) :]
        return super().request(method, url, *args, **kwargs)


def rest_client(account_sid: str, auth_token: str, base_url: str) -> Client:
    """The twilio SDK's client, sending to ``base_url`` instead of ``https://api.twilio.com``."""
    http = _BaseUrlHttpClient(base_url, REST_TIMEOUT_S)
    # The SDK's own request log prints URLs and form bodies at INFO; keep it quiet.
    logging.getLogger("bridge.twilio_http").setLevel(logging.WARNING)
    return Client(account_sid, auth_token, http_client=http)


@dataclass(frozen=True, slots=True)
class DialRequest:
    to: str
    from_: str
    twiml: str
    status_callback: str
    timeout_s: int
    # Where Twilio posts its answering machine detection result; None: no detection.
    amd_callback: str | None = None


class TwilioRest:
    """The handful of REST operations a call needs, with errors turned into ours."""

    def __init__(self, settings: Settings) -> None:
        self._client = rest_client(
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            settings.twilio_api_base_url,
        )

    def dial(self, req: DialRequest) -> str:
        """Place an outbound call and return its CallSid."""
        try:
            call = self._client.calls.create(
                to=req.to,
                from_=req.from_,
                twiml=req.twiml,
                status_callback=req.status_callback,
                status_callback_method="POST",
                status_callback_event=["initiated", "ringing", "answered", "completed"],
                timeout=req.timeout_s,
                **_machine_detection(req.amd_callback),
            )
        except (TwilioException, OSError) as exc:
            raise TwilioRestError(f"dialling {req.to} failed: {describe(exc)}") from exc
        if not call.sid:
            raise TwilioRestError(f"dialling {req.to}: Twilio returned no CallSid")
        return str(call.sid)

    def hang_up(self, call_sid: str, answered: bool) -> bool:
        """End a call: ``completed`` once answered, ``canceled`` while it still rings.

        False when the call had already ended (not an error: the other side won the race).
        """
        return self._update(call_sid, status="completed" if answered else "canceled")

    def redirect(self, call_sid: str, twiml: str) -> bool:
        """Replace what a live call is doing with ``twiml`` (this ends its Media Stream).

        False when the call had already ended; raises :class:`TwilioRestError` otherwise.
        """
        return self._update(call_sid, twiml=twiml)

    def _update(self, call_sid: str, **fields: str) -> bool:
        try:
            self._client.calls(call_sid).update(**fields)
        except TwilioRestException as exc:
            if exc.status == 404 or exc.code in ALREADY_ENDED_CODES:
                log.info("call %s had already ended (%s)", call_sid, describe(exc))
                return False
            raise TwilioRestError(f"updating {call_sid} failed: {describe(exc)}") from exc
        except (TwilioException, OSError) as exc:
            raise TwilioRestError(f"updating {call_sid} failed: {describe(exc)}") from exc
        return True


def _machine_detection(callback: str | None) -> dict[str, str]:
    """Asynchronous AMD: the agent's TwiML (whisper, stream) runs at once, as for a human, and
    the verdict arrives later at ``callback``; "Enable" reports a machine as soon as it is
    recognised instead of waiting for the greeting's beep."""
    if callback is None:
        return {}
    return {
        "machine_detection": "Enable",
        "async_amd": "true",
        "async_amd_status_callback": callback,
        "async_amd_status_callback_method": "POST",
    }


def describe(exc: BaseException) -> str:
    if isinstance(exc, TwilioRestException):
        return f"HTTP {exc.status} code {exc.code}: {exc.msg}"
    return f"{type(exc).__name__}: {exc}"
