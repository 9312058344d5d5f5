"""Twilio: the Media Streams wire, REST, TwiML, signatures, the language menu."""
