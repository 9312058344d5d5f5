"""TwiML documents the bridge answers with, built with the twilio SDK (never by string glue)."""

from __future__ import annotations

from twilio.twiml.voice_response import Connect, VoiceResponse

from bridge.prompts import Prompt

# Media Stream <Parameter> names: Twilio drops query strings from stream URLs, so the call a
# stream belongs to travels as custom parameters and comes back in the `start` message.
PARAM_CALL = "bridgeCallSid"
PARAM_LEG = "leg"


def _say(response: VoiceResponse, prompt: Prompt) -> None:
    response.say(prompt.text, language=prompt.say_language, voice=prompt.voice)


def connect_stream(stream_url: str, call_sid: str, leg: str, intro: Prompt | None) -> str:
    """Say ``intro`` (if any), then connect this leg to a bidirectional Media Stream.

    ``<Connect><Stream>`` (not ``<Start>``) is the bidirectional form: the only one that lets us
    play translated audio back. It blocks the TwiML until the bridge closes the socket.
    """
    response = VoiceResponse()
    if intro is not None:
        _say(response, intro)
    connect = Connect()
    stream = connect.stream(url=stream_url)
    stream.parameter(name=PARAM_CALL, value=call_sid)
    stream.parameter(name=PARAM_LEG, value=leg)
    response.append(connect)
    return str(response.to_xml())


def say_and_hang_up(prompt: Prompt) -> str:
    """Tell the party something, then end their call."""
    response = VoiceResponse()
    _say(response, prompt)
    response.hangup()
    return str(response.to_xml())
