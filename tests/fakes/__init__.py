"""Honest local stand-ins for Twilio and the OpenAI realtime translation API.

Everything here is built from the public wire protocols only (never from ``bridge``), so a
bridge that passes against these fakes speaks the real protocols.
"""
