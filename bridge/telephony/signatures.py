"""X-Twilio-Signature checks, against the public URL Twilio actually requested.

Behind a TLS-terminating proxy Flask sees ``http://internal:port``; Twilio signed
``https://public-host/...``. So the URL is rebuilt from ``PUBLIC_BASE_URL`` plus the request's
path and query, never from the Host header (which a client controls).
"""

from __future__ import annotations

from flask import Request
from twilio.request_validator import RequestValidator

from bridge.settings.env import Settings

SIGNATURE_HEADER = "X-Twilio-Signature"


class SignatureChecker:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._validator = RequestValidator(settings.twilio_auth_token)

    @staticmethod
    def _path_and_query(request: Request) -> str:
        query = request.query_string.decode("latin-1")
        return request.path + (f"?{query}" if query else "")

    def webhook_ok(self, request: Request) -> bool:
        """A form POST from Twilio: HMAC over the URL plus every form field."""
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not signature:
            return False
        url = self._settings.public_url(self._path_and_query(request))
        return bool(self._validator.validate(url, request.form, signature))

    def stream_ok(self, request: Request) -> bool:
        """A Media Stream upgrade: HMAC over the ``wss://`` URL with no parameters."""
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not signature:
            return False
        url = self._settings.stream_url(self._path_and_query(request))
        return bool(self._validator.validate(url, {}, signature))
