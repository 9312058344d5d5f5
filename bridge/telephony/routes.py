"""The URL paths Twilio requests on the bridge: the web layer serves them, TwiML and the
number set-up point Twilio at them. Kept here so both sides agree without importing each other."""

from __future__ import annotations

VOICE_PATH = "/twilio/voice"
# The number's "Primary handler fails" URL (set by bridge/telephony/number.py): Twilio requests
# it when the voice webhook answers 5xx, times out or returns bad TwiML.
FALLBACK_PATH = "/twilio/fallback"
LANGUAGE_PATH = "/twilio/language"
STATUS_PATH = "/twilio/status"
AMD_PATH = "/twilio/amd"
MEDIA_PATH = "/media"
