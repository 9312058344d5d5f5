"""Honest local stand-ins for Twilio and the OpenAI realtime translation API.

The OpenAI stand-in and the audio helpers here are built from the public wire protocols only
(never from ``bridge``). The Twilio stand-in is the call simulator's carrier (``bridge.sim``),
which is itself built from Twilio's public protocols and shares only the μ-law codec and the
audio constants with the bridge; ``tests.fakes.twilio`` names it as the tests always have.
"""
