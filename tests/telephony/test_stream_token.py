"""Stream tokens: only the bridge's own TwiML can bind a Media Stream to a call's leg."""

from __future__ import annotations

import pytest

from bridge.telephony.stream_token import StreamTokenError, StreamTokens

CALL = "CA" + "1" * 32
OTHER_CALL = "CA" + "2" * 32
NOW = 1_800_000_000.0


def test_a_token_admits_exactly_its_call_and_leg_until_it_expires() -> None:
    tokens = StreamTokens("auth-token")
    token = tokens.issue(CALL, "caller", NOW, 120)
    tokens.check(CALL, "caller", token, NOW)
    tokens.check(CALL, "caller", token, NOW + 120)  # the last second still counts
    # Another instance sharing the auth token verifies it too.
    StreamTokens("auth-token").check(CALL, "caller", token, NOW + 60)
    refusals = {
        "the other leg": (CALL, "agent", token, NOW),
        "another call": (OTHER_CALL, "caller", token, NOW),
        "expired": (CALL, "caller", token, NOW + 121),
    }
    for call, leg, value, now in refusals.values():
        with pytest.raises(StreamTokenError):
            tokens.check(call, leg, value, now)


def test_forged_and_altered_tokens_are_refused_without_echoing_them() -> None:
    tokens = StreamTokens("auth-token")
    token = tokens.issue(CALL, "agent", NOW, 150)
    version, expires, mac = token.split(".")
    forged = {
        "": "no stream token",
        "garbage": "malformed",
        f"v2.{expires}.{mac}": "malformed",
        f"{version}.{int(expires) + 3600}.{mac}": "not issued",  # a later expiry, same MAC
        f"{version}.-{expires}.{mac}": "malformed",
        f"{version}.{expires}.{mac[:-1]}": "not issued",
        f"{version}.{expires}.{mac}x": "not issued",
        f"{version}.{expires}.": "not issued",
        StreamTokens("another-auth-token").issue(CALL, "agent", NOW, 150): "not issued",
    }
    for value, why in forged.items():
        with pytest.raises(StreamTokenError) as info:
            tokens.check(CALL, "agent", value, NOW)
        assert why in str(info.value), value
        assert mac not in str(info.value)


def test_the_key_is_derived_not_the_auth_token_itself() -> None:
    """An HMAC keyed directly by the auth token would be Twilio's own signing key: a token must
    not be usable as, or derivable from, a Twilio signature over the same text."""
    import base64
    import hashlib
    import hmac

    token = StreamTokens("auth-token").issue(CALL, "caller", NOW, 0)
    expires = token.split(".")[1]
    direct = hmac.new(b"auth-token", f"{CALL}\ncaller\n{expires}".encode(), hashlib.sha256)
    assert base64.urlsafe_b64encode(direct.digest()).decode().rstrip("=") not in token
