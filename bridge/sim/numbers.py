"""The IncomingPhoneNumbers resource of the Twilio stand-in: list by number, fetch, update.

Pure (no sockets): forms in, Twilio's JSON out, :class:`~bridge.sim.rest.RestError` for what
Twilio refuses. Shapes follow Twilio's REST reference for ``/2010-04-01/Accounts/{AccountSid}/
IncomingPhoneNumbers``: a list page names its records ``incoming_phone_numbers`` beside the
paging fields, updates are form-encoded with CamelCase names and answer the whole resource.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from bridge.sim.rest import API_VERSION, Form, RestError, first, rfc2822

# Form field -> resource field, for everything ``bridge.telephony.number`` (and the console) may
# change.
UPDATABLE = {
    "FriendlyName": "friendly_name",
    "VoiceUrl": "voice_url",
    "VoiceMethod": "voice_method",
    "VoiceFallbackUrl": "voice_fallback_url",
    "VoiceFallbackMethod": "voice_fallback_method",
    "StatusCallback": "status_callback",
    "StatusCallbackMethod": "status_callback_method",
    "VoiceApplicationSid": "voice_application_sid",
    "SmsUrl": "sms_url",
    "SmsMethod": "sms_method",
}
_METHODS = frozenset({"GET", "POST"})
_URL_FIELDS = frozenset({"VoiceUrl", "VoiceFallbackUrl", "StatusCallback", "SmsUrl"})
_DEFAULT_PAGE_SIZE = 50


def _check(name: str, value: str) -> None:
    """Refuse what Twilio refuses: a method other than GET/POST, a URL that is not http(s)."""
    if name.endswith("Method") and value.upper() not in _METHODS:
        raise RestError(400, 21502, f"{name} must be GET or POST")
    if name in _URL_FIELDS and value and urlsplit(value).scheme not in ("http", "https"):
        raise RestError(400, 21502, f"{name} is not a valid URL: {value}")


class PhoneNumbers:
    """The numbers one account owns, with Twilio's defaults for a freshly bought number."""

    def __init__(self, account_sid: str) -> None:
        self.account_sid = account_sid
        self._numbers: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _missing(self, sid: str) -> RestError:
        return RestError(404, 20404, f"The requested resource {self._uri(sid)} was not found")

    def _uri(self, sid: str = "") -> str:
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/IncomingPhoneNumbers"
        return f"{base}/{sid}.json" if sid else f"{base}.json"

    def add(self, phone_number: str, sid: str, **fields: str | None) -> dict[str, Any]:
        """Own ``phone_number`` (E.164) as ``sid`` (``PN…``); ``fields`` preset resource fields."""
        now = rfc2822(time.time())
        resource: dict[str, Any] = {
            "account_sid": self.account_sid,
            "address_requirements": "none",
            "api_version": API_VERSION,
            "beta": False,
            "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False},
            "date_created": now,
            "date_updated": now,
            "friendly_name": phone_number,
            "identity_sid": None,
            "phone_number": phone_number,
            "origin": "twilio",
            "sid": sid,
            "sms_application_sid": None,
            "sms_fallback_method": "POST",
            "sms_fallback_url": "",
            "sms_method": "POST",
            "sms_url": "",
            "status_callback": "",
            "status_callback_method": "POST",
            "trunk_sid": None,
            "uri": self._uri(sid),
            "voice_receive_mode": "voice",
            "voice_application_sid": None,
            "voice_caller_id_lookup": False,
            "voice_fallback_method": "POST",
            "voice_fallback_url": None,
            "voice_method": "POST",
            "voice_url": "https://demo.twilio.com/welcome/voice/",
            "emergency_status": "Inactive",
            "emergency_address_sid": None,
            "emergency_address_status": "unregistered",
            "bundle_sid": None,
            "status": "in-use",
            "type": "local",
        }
        resource.update(fields)
        with self._lock:
            self._numbers[sid] = resource
        return dict(resource)

    def get(self, sid: str) -> dict[str, Any]:
        """One number's resource; 404 (Twilio's 20404) if the account has no such number."""
        with self._lock:
            resource = self._numbers.get(sid)
            if resource is None:
                raise RestError(
                    404, 20404, f"The requested resource {self._uri(sid)} was not found"
                )
            return dict(resource)

    def list(self, query: Form) -> dict[str, Any]:
        """A page of numbers, filtered by an exact ``PhoneNumber`` (and ``FriendlyName``)."""
        number, name = first(query, "PhoneNumber"), first(query, "FriendlyName")
        size = int(first(query, "PageSize") or _DEFAULT_PAGE_SIZE)
        with self._lock:
            records = [
                dict(r)
                for r in self._numbers.values()
                if (number is None or r["phone_number"] == number)
                and (name is None or r["friendly_name"] == name)
            ][:size]
        params = {k: v for k, v in (("PhoneNumber", number), ("FriendlyName", name)) if v}
        uri = f"{self._uri()}?{urlencode({**params, 'PageSize': size, 'Page': 0})}"
        return {
            "end": max(0, len(records) - 1),
            "first_page_uri": uri,
            "incoming_phone_numbers": records,
            "next_page_uri": None,
            "page": 0,
            "page_size": size,
            "previous_page_uri": None,
            "start": 0,
            "uri": uri,
        }

    def update(self, sid: str, form: Form) -> dict[str, Any]:
        """Apply the form's known fields (all checked before any is applied)."""
        self.get(sid)  # an unknown number is 404 whatever the form says, as on Twilio
        changes: dict[str, str | None] = {
            UPDATABLE[k]: v[0] for k, v in form.items() if k in UPDATABLE and v
        }
        for name, values in form.items():
            if name in UPDATABLE and values:
                _check(name, values[0])
        for field in ("voice_method", "voice_fallback_method", "status_callback_method"):
            if field in changes:
                changes[field] = str(changes[field]).upper()
        if changes.get("voice_application_sid") == "":
            changes["voice_application_sid"] = None  # an empty value detaches the application
        with self._lock:
            if sid not in self._numbers:
                raise RestError(
                    404, 20404, f"The requested resource {self._uri(sid)} was not found"
                )
            self._numbers[sid].update(changes, date_updated=rfc2822(time.time()))
            return dict(self._numbers[sid])
