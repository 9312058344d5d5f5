"""``python -m bridge.sim``: call a running bridge exactly as Twilio would, and report.

Settings come from the environment or ``.env``, as for the bridge: ``TWILIO_ACCOUNT_SID`` and
``TWILIO_AUTH_TOKEN`` (the simulator signs with them and checks the bridge's REST requests
against them), ``PUBLIC_BASE_URL`` (the bridge; ``--bridge`` overrides it) and, to print the
transcript, ``ADMIN_TOKEN``. The bridge must send its REST requests to the simulator: set its
``TWILIO_API_BASE_URL`` to the address printed at start (fix it with ``--rest-port``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from bridge.settings.env import ConfigError, read_environment, twilio_access
from bridge.settings.languages import LanguageFileError, load_languages
from bridge.sim.session import SimOptions, Simulator
from bridge.sim.wav import DEMO_AGENT_WAV, DEMO_CALLER_WAV, WavError


def default_out_dir(kind: str) -> Path:
    """``out/<kind>-<UTC timestamp>`` (``out/`` is git-ignored)."""
    return Path("out") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def menu_digit(language: str) -> str:
    """The keypad digit of ``language`` in config/languages.json (what the bridge's menu
    offers, unless a deployment reassigned it: then pass ``--menu-answer``)."""
    table = load_languages()
    if language not in table:
        raise ConfigError(f"--caller-language {language!r}: not in config/languages.json")
    return table[language].digit


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bridge.sim",
        description="Dial a running interpreter bridge as Twilio would, stream two WAV files as "
        "the caller and the agent, record what each heard, and report.",
    )
    p.add_argument("--bridge", help="the bridge's public origin (default: PUBLIC_BASE_URL)")
    p.add_argument("--caller", type=Path, default=DEMO_CALLER_WAV, help="what the caller says")
    p.add_argument("--agent", type=Path, default=DEMO_AGENT_WAV, help="what the agent says")
    p.add_argument("--out", type=Path, help="output folder (default: out/sim-<timestamp>)")
    p.add_argument("--admin-token", help="the bridge's ADMIN_TOKEN (default: from the env)")
    p.add_argument("--from", dest="caller_number", default="+15550001111", help="caller ID")
    p.add_argument("--to", dest="bridge_number", default="+15550002222", help="number dialled")
    p.add_argument(
        "--caller-language",
        default="es",
        help="the language chosen in the bridge's menu, if it has one (default: es)",
    )
    p.add_argument("--menu-answer", help="keys ('2') or words ('español') for the menu")
    p.add_argument("--lead-in", type=float, default=1.0, help="silence before each speaks (s)")
    p.add_argument("--tail", type=float, default=4.0, help="wait after both spoke (s)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="longest call (s)")
    p.add_argument("--rest-host", default="127.0.0.1", help="where the REST stand-in listens")
    p.add_argument("--rest-port", type=int, default=0, help="its port (default: any free one)")
    return p


def options_from(args: argparse.Namespace, env: dict[str, str], out_dir: Path) -> SimOptions:
    """The simulation's options from the command line over the environment."""
    if args.bridge:
        env = {**env, "PUBLIC_BASE_URL": args.bridge}
    elif not env.get("PUBLIC_BASE_URL"):
        raise ConfigError("which bridge? pass --bridge https://<host> or set PUBLIC_BASE_URL")
    access = twilio_access(env)
    return SimOptions(
        bridge_url=access.public_base_url,
        account_sid=access.account_sid,
        auth_token=access.auth_token,
        caller_wav=args.caller,
        agent_wav=args.agent,
        out_dir=out_dir,
        admin_token=args.admin_token or env.get("ADMIN_TOKEN") or None,
        caller_number=args.caller_number,
        bridge_number=args.bridge_number,
        menu_answer=args.menu_answer or menu_digit(args.caller_language),
        lead_in_s=args.lead_in,
        tail_s=args.tail,
        max_call_s=args.max_seconds,
        rest_host=args.rest_host,
        rest_port=args.rest_port,
    )


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run one call; 0 when the telephony path worked end to end, 1 otherwise."""
    args = parser().parse_args(argv)
    try:
        options = options_from(args, read_environment(), args.out or default_out_dir("sim"))
        simulator = Simulator(options, out)
    except (ConfigError, LanguageFileError, WavError, OSError) as exc:
        sys.stderr.write(f"bridge.sim: {exc}\n")
        return 1
    with simulator:
        out.write(f"Twilio REST stand-in at {simulator.rest_base_url}: the bridge's ")
        out.write("TWILIO_API_BASE_URL must point here.\n")
        report = simulator.run_call()
    out.write("\n" + report.to_text())
    out.write(f"\nHeard audio, transcript and report in {options.out_dir}/\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
