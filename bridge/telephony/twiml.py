"""TwiML documents the bridge answers with, built with the twilio SDK (never by string glue).

``twiml/`` holds a reference copy of each document for a sample configuration, so the exact XML
Twilio gets can be read without running the bridge (``tests/settings/test_prompts.py`` keeps them in
sync).
"""

from __future__ import annotations

from collections.abc import Sequence

from twilio.twiml.voice_response import Connect, Gather, VoiceResponse

from bridge.settings.prompts import Prompt

# Media Stream <Parameter> names: Twilio drops query strings from stream URLs, so the call a
# stream belongs to travels as custom parameters and comes back in the `start` message.
PARAM_CALL = "bridgeCallSid"
PARAM_LEG = "leg"
# Binds the stream to the call and leg above: an HMAC only the bridge can make, carried only in
# this TwiML (bridge/telephony/stream_token.py), so a start that merely names a call is refused.
PARAM_TOKEN = "streamToken"  # noqa: S105 (a parameter name, not a secret)


def _say(parent: VoiceResponse | Gather, prompt: Prompt) -> None:
    parent.say(prompt.text, language=prompt.say_language, voice=prompt.voice)


def connect_stream(
    stream_url: str, call_sid: str, leg: str, token: str, intro: Sequence[Prompt]
) -> str:
    """Say each prompt of ``intro`` in order, then connect this leg to a bidirectional Media
    Stream whose `start` carries the call, the leg and the leg's stream ``token``.

    ``<Connect><Stream>`` (not ``<Start>``) is the bidirectional form: the only one that lets us
    play translated audio back. It blocks the TwiML until the bridge closes the socket. Twilio
    runs verbs one after another, so the party has heard every ``<Say>`` (a consent notice
    among them) before their stream starts and anything of theirs is translated or transcribed.
    """
    response = VoiceResponse()
    for prompt in intro:
        _say(response, prompt)
    connect = Connect()
    stream = connect.stream(url=stream_url)
    stream.parameter(name=PARAM_CALL, value=call_sid)
    stream.parameter(name=PARAM_LEG, value=leg)
    stream.parameter(name=PARAM_TOKEN, value=token)
    response.append(connect)
    return str(response.to_xml())


def say_and_hang_up(prompt: Prompt) -> str:
    """Tell the party something, then end their call."""
    return say_all_and_hang_up([prompt])


def say_all_and_hang_up(prompts: Sequence[Prompt]) -> str:
    """Say each prompt in its own voice, then end the call."""
    response = VoiceResponse()
    for prompt in prompts:
        _say(response, prompt)
    response.hangup()
    return str(response.to_xml())


def gather_menu(
    action_url: str,
    lines: Sequence[Prompt],
    *,
    hints: Sequence[str],
    speech_language: str,
    timeout_s: int,
) -> str:
    """Say ``lines`` while listening for one key or a spoken answer, posted to ``action_url``.

    The keypad and speech are both on (``input="dtmf speech"``) and either interrupts the
    lines. Twilio goes on to the next verb when nothing was said, so a ``<Redirect>`` to the
    same action follows: silence reaches the bridge as an attempt with no answer.
    ``speech_language`` is the recogniser's one language; ``hints`` bias it towards the
    language names (said in their own languages, which a recogniser otherwise mishears).
    """
    response = VoiceResponse()
    gather = Gather(
        input="dtmf speech",
        action=action_url,
        method="POST",
        num_digits=1,
        timeout=timeout_s,
        speech_timeout="auto",
        language=speech_language,
        hints=", ".join(hints),
    )
    for line in lines:
        _say(gather, line)
    response.append(gather)
    response.redirect(action_url, method="POST")
    return str(response.to_xml())
