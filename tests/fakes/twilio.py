"""The Twilio stand-in the tests drive: the call simulator's carrier (``bridge.sim``).

Kept under its old names so the tests read as before; the implementation is the simulator's, so
what the tests check is what ``python -m bridge.sim`` does against a deployment.
"""

from bridge.sim.answers import GatherAnswer
from bridge.sim.call import DialBehaviour
from bridge.sim.call import SimCall as FakeCall
from bridge.sim.carrier import TwilioSim as FakeTwilio
from bridge.sim.webhooks import WebhookRecord
from tests.fakes.audio import (
    AGENT_EN_8K_MULAW,
    AGENT_EN_24K_PCM16,
    CALLER_ES_8K_MULAW,
    CALLER_ES_24K_PCM16,
    SHARED_AUDIO,
    load_wav,
)

__all__ = [
    "AGENT_EN_8K_MULAW",
    "AGENT_EN_24K_PCM16",
    "CALLER_ES_8K_MULAW",
    "CALLER_ES_24K_PCM16",
    "SHARED_AUDIO",
    "DialBehaviour",
    "FakeCall",
    "FakeTwilio",
    "GatherAnswer",
    "WebhookRecord",
    "load_wav",
]
