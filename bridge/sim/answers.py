"""What a party "answers" Twilio: ``<Gather>`` input and answering machine detection verdicts.

Pure: a scripted answer and the verb (or the dial's AMD settings) in, the parameters Twilio
would post out. Shapes follow Twilio's public docs: a ``<Gather>`` action request carries the
call's parameters plus ``Digits``/``FinishedOnKey`` (keypad) or ``SpeechResult``/``Confidence``
(speech); an asynchronous AMD callback carries ``AccountSid``, ``CallSid``, ``AnsweredBy`` and
``MachineDetectionDuration`` (ms).
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.sim import twiml as tw

# MachineDetection=Enable reports as soon as it knows: human, machine_start, fax or unknown.
# DetectMessageEnd waits for the greeting to end, and reports machine_end_* instead.
ENABLE_VERDICTS = frozenset({"human", "machine_start", "fax", "unknown"})
MESSAGE_END_VERDICTS = frozenset(
    {"human", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax", "unknown"}
)
MACHINE_DETECTION_MODES = frozenset({"Enable", "DetectMessageEnd"})


@dataclass(frozen=True, slots=True)
class GatherAnswer:
    """One answer to one ``<Gather>``: keys pressed, or words said (as the recogniser heard
    them, with its confidence). Both empty is silence, like ``None``."""

    digits: str = ""
    speech: str = ""
    confidence: float = 0.92


def gather_params(gather: tw.Gather, answer: GatherAnswer | None) -> dict[str, str] | None:
    """The input fields Twilio posts to the action, or None when nothing usable was collected
    (silence, or input of a kind the ``<Gather>`` does not listen for)."""
    if answer is None:
        return None
    if answer.digits and "dtmf" in gather.input:
        keys = answer.digits
        finished = ""
        if gather.finish_on_key and gather.finish_on_key in keys:
            keys, finished = keys.split(gather.finish_on_key, 1)[0], gather.finish_on_key
        if gather.num_digits is not None and len(keys) >= gather.num_digits:
            keys, finished = keys[: gather.num_digits], ""
        if keys:
            return {"Digits": keys, "FinishedOnKey": finished}
        return None
    if answer.speech and "speech" in gather.input:
        return {"SpeechResult": answer.speech, "Confidence": f"{answer.confidence:.8f}"}
    return None


def amd_verdict(mode: str, answered_by: str) -> str:
    """What Twilio reports for a party that is ``answered_by`` under ``mode``: Enable says
    ``machine_start`` for any machine; DetectMessageEnd waits and says how the greeting ended."""
    if mode == "Enable":
        return "machine_start" if answered_by.startswith("machine_") else answered_by
    if answered_by == "machine_start":
        return "machine_end_other"
    return answered_by


def amd_params(account_sid: str, call_sid: str, answered_by: str, took_s: float) -> dict[str, str]:
    """The asynchronous AMD status callback's form."""
    return {
        "AccountSid": account_sid,
        "CallSid": call_sid,
        "AnsweredBy": answered_by,
        "MachineDetectionDuration": str(round(took_s * 1000)),
    }
