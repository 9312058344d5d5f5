"""Twilio interpreter bridge: two phone legs, interpreted both ways in real time."""
