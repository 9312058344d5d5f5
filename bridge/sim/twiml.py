"""Parse the TwiML the bridge returns into verbs the Twilio stand-in can execute.

Pure: text in, dataclasses out. Only the verbs a phone bridge uses are modelled; anything else
becomes :class:`Unsupported` so the call simulator can record it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field


class TwimlError(ValueError):
    """The document is not TwiML Twilio would execute (Twilio error 12100)."""


@dataclass(frozen=True, slots=True)
class Say:
    """``<Say>``: text spoken to the party."""

    text: str
    voice: str | None = None
    language: str | None = None
    loop: int = 1


@dataclass(frozen=True, slots=True)
class Pause:
    """``<Pause length="n"/>``."""

    length_s: float = 1.0


@dataclass(frozen=True, slots=True)
class Hangup:
    """``<Hangup/>``."""


@dataclass(frozen=True, slots=True)
class Reject:
    """``<Reject reason="…"/>``: refuse an inbound call without answering."""

    reason: str = "rejected"


@dataclass(frozen=True, slots=True)
class Redirect:
    """``<Redirect>url</Redirect>``."""

    url: str
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A ``<Stream>`` with its attributes and ``<Parameter>`` children."""

    url: str
    name: str | None = None
    track: str | None = None
    status_callback: str | None = None
    status_callback_method: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Connect:
    """``<Connect><Stream/></Connect>``: a bidirectional stream that blocks the document."""

    stream: StreamSpec
    action: str | None = None
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class StartStream:
    """``<Start><Stream/></Start>``: unidirectional (listen-only) stream."""

    stream: StreamSpec


@dataclass(frozen=True, slots=True)
class Gather:
    """``<Gather>``: say the nested ``<Say>``/``<Pause>`` while listening for keys or speech.

    Attributes keep Twilio's defaults (input ``dtmf``, timeout 5 s, finishOnKey ``#``,
    language ``en-US``, no action: the current document's URL).
    """

    input: frozenset[str] = frozenset({"dtmf"})
    action: str | None = None
    method: str = "POST"
    timeout_s: float = 5.0
    speech_timeout: str | None = None
    num_digits: int | None = None
    finish_on_key: str = "#"
    language: str = "en-US"
    hints: tuple[str, ...] = ()
    action_on_empty_result: bool = False
    nested: tuple[Say | Pause, ...] = ()


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A verb this stand-in does not execute."""

    tag: str


Verb = Say | Pause | Hangup | Reject | Redirect | Connect | StartStream | Gather | Unsupported
GATHER_INPUTS = frozenset({"dtmf", "speech"})
# Twilio lets <Gather> nest only these (a nested <Play> is accepted, not played, here).
GATHER_NESTABLE = frozenset({"Say", "Pause", "Play"})


def _stream(element: ET.Element) -> StreamSpec:
    url = element.get("url")
    if not url:
        raise TwimlError("<Stream> without url")
    parameters: dict[str, str] = {}
    for child in element:
        if child.tag != "Parameter":
            raise TwimlError(f"<Stream> may only contain <Parameter>, not <{child.tag}>")
        name, value = child.get("name"), child.get("value")
        if name is None or value is None:
            raise TwimlError("<Parameter> needs name and value")
        parameters[name] = value
    return StreamSpec(
        url=url,
        name=element.get("name"),
        track=element.get("track"),
        status_callback=element.get("statusCallback"),
        status_callback_method=element.get("statusCallbackMethod"),
        parameters=parameters,
    )


def _only_stream(element: ET.Element) -> StreamSpec:
    streams = [child for child in element if child.tag == "Stream"]
    if len(streams) != 1 or len(element) != 1:
        raise TwimlError(f"<{element.tag}> must contain exactly one <Stream>")
    return _stream(streams[0])


def _say(element: ET.Element) -> Say:
    return Say(
        text=(element.text or "").strip(),
        voice=element.get("voice"),
        language=element.get("language"),
        loop=int(element.get("loop", "1")),
    )


def _gather(element: ET.Element) -> Gather:
    inputs = frozenset(element.get("input", "dtmf").split())
    if not inputs or not inputs <= GATHER_INPUTS:
        raise TwimlError(f"<Gather input={element.get('input')!r}>: dtmf and/or speech only")
    nested: list[Say | Pause] = []
    for child in element:
        if child.tag not in GATHER_NESTABLE:
            raise TwimlError(f"<Gather> may not contain <{child.tag}>")
        if child.tag == "Say":
            nested.append(_say(child))
        elif child.tag == "Pause":
            nested.append(Pause(float(child.get("length", "1"))))
    num_digits = element.get("numDigits")
    if num_digits is not None and (not num_digits.isdigit() or int(num_digits) < 1):
        raise TwimlError(f"<Gather numDigits={num_digits!r}>: a positive integer")
    hints = tuple(h.strip() for h in element.get("hints", "").split(",") if h.strip())
    if any(len(h) > 100 for h in hints):
        raise TwimlError("<Gather hints>: each hint is at most 100 characters")
    return Gather(
        input=inputs,
        action=element.get("action"),
        method=element.get("method", "POST").upper(),
        timeout_s=float(element.get("timeout", "5")),
        speech_timeout=element.get("speechTimeout"),
        num_digits=int(num_digits) if num_digits else None,
        finish_on_key=element.get("finishOnKey", "#"),
        language=element.get("language", "en-US"),
        hints=hints,
        action_on_empty_result=element.get("actionOnEmptyResult", "false") == "true",
        nested=tuple(nested),
    )


def _verb(element: ET.Element) -> Verb:
    tag = element.tag
    if tag == "Say":
        return _say(element)
    if tag == "Gather":
        return _gather(element)
    if tag == "Pause":
        return Pause(float(element.get("length", "1")))
    if tag == "Hangup":
        return Hangup()
    if tag == "Reject":
        return Reject(element.get("reason", "rejected"))
    if tag == "Redirect":
        return Redirect((element.text or "").strip(), element.get("method", "POST"))
    if tag == "Connect":
        return Connect(_only_stream(element), element.get("action"), element.get("method", "POST"))
    if tag == "Start":
        return StartStream(_only_stream(element))
    return Unsupported(tag)


def parse_twiml(text: str) -> list[Verb]:
    """Parse a TwiML document (``<Response>`` root) into its verbs, in order."""
    try:
        # The TwiML comes from the bridge the user points the simulator at; Python's expat
        # resolves no external entities, and documents are small (Twilio caps them at 64 KB).
        root = ET.fromstring(text)  # noqa: S314
    except ET.ParseError as exc:
        raise TwimlError(f"not XML: {exc}") from exc
    if root.tag != "Response":
        raise TwimlError(f"root element is <{root.tag}>, not <Response>")
    return [_verb(child) for child in root]
