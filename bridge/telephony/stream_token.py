"""Stream tokens: what binds a Media Stream to the call and leg whose TwiML opened it.

The ``/media`` upgrade's signature covers a constant URL (Twilio drops query strings), so one
captured upgrade can be replayed at will, and a stream's ``start`` names its call only by
values an outsider can learn (CallSids, the leg). What an outsider cannot learn is a secret
that travels only inside the TwiML we hand to Twilio: an HMAC over the call, the leg and an
expiry, carried as a ``<Parameter>`` and returned by Twilio in ``start.customParameters``.

The key is derived from ``TWILIO_AUTH_TOKEN`` with a purpose label (HMAC-SHA256 as a KDF), so
every instance of a cluster verifies any other's tokens without a new shared secret, and the
auth token itself is never used for two purposes. Rotating the auth token invalidates tokens
issued before (only streams not yet started: at most a ringing agent's).

Pure: no I/O; the clock is passed in. A token is never logged (the errors say only why).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

# Versioned, so a future format can be told apart (and refused by this one).
_VERSION = "v1"
_PURPOSE = b"twilio-interpreter-bridge/media-stream-token/v1"


class StreamTokenError(ValueError):
    """A stream token that does not admit this stream; the message never holds the token."""


class StreamTokens:
    """Issues and checks the tokens of one bridge (all instances sharing an auth token)."""

    def __init__(self, auth_token: str) -> None:
        self._key = hmac.new(auth_token.encode(), _PURPOSE, hashlib.sha256).digest()

    def _mac(self, call_sid: str, leg: str, expires: int) -> str:
        # Unambiguous fields: SIDs and legs never hold a newline.
        message = f"{call_sid}\n{leg}\n{expires}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def issue(self, call_sid: str, leg: str, now: float, ttl_s: float) -> str:
        """A token for ``leg`` of the call ``call_sid``, valid until ``now + ttl_s`` (wall
        clock, seconds: instances agree on it, their monotonic clocks do not)."""
        expires = int(now + ttl_s)
        return f"{_VERSION}.{expires}.{self._mac(call_sid, leg, expires)}"

    def check(self, call_sid: str, leg: str, token: str, now: float) -> None:
        """Raise :class:`StreamTokenError` unless ``token`` was issued for exactly this call
        and leg and has not expired at ``now``."""
        if not token:
            raise StreamTokenError("no stream token")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _VERSION or not parts[1].isdigit():
            raise StreamTokenError("malformed stream token")
        expires = int(parts[1])
        # Compared in constant time before the expiry is judged, so timing tells nothing
        # about which part of a forged token was wrong.
        if not hmac.compare_digest(parts[2].encode(), self._mac(call_sid, leg, expires).encode()):
            raise StreamTokenError("stream token not issued for this call and leg")
        if now > expires:
            raise StreamTokenError("stream token expired")
