"""The call simulator: Twilio played against a running bridge (``python -m bridge.sim``), the
offline demo (``python -m bridge.sim.demo``), and the Twilio stand-in the tests drive.

Built from Twilio's public protocols (webhooks, TwiML, Media Streams, the REST API), sharing
only the μ-law codec, the audio constants and the 3:1 resampler with the bridge itself.
"""
