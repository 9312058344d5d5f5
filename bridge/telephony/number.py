"""Point a Twilio number at this deployment: ``python -m bridge.telephony.number +15551234567``.

Sets the number's voice webhook (``/twilio/voice``, POST), its fallback (``/twilio/fallback``,
POST: the caller hears an apology instead of Twilio's "application error" when the webhook
fails) and its call status callback (``/twilio/status``, POST), all on ``PUBLIC_BASE_URL``,
through the REST API (``TWILIO_API_BASE_URL`` honoured as the bridge honours it). A TwiML App
attached to the number would override the voice URLs, so it is detached. Prints each field
before → after; ``--dry-run`` only prints. Settings come from the environment or ``.env``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from twilio.base.exceptions import TwilioException, TwilioRestException

from bridge.settings.env import ConfigError, read_environment, twilio_access
from bridge.telephony.rest import describe, rest_client
from bridge.telephony.routes import FALLBACK_PATH, STATUS_PATH, VOICE_PATH

# Twilio's code for an account SID / auth token pair it does not accept.
AUTHENTICATION_FAILED = 20003


class NumberError(RuntimeError):
    """The number cannot be configured; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class Change:
    """One field of the number: its SDK name, what it is now, and what it should be."""

    field: str
    before: str | None
    after: str | None

    @property
    def changed(self) -> bool:
        return (self.before or "") != (self.after or "")


def wanted_fields(public_base_url: str, fallback_url: str | None) -> dict[str, str]:
    """The number's voice configuration for a bridge at ``public_base_url``."""
    return {
        "voice_url": public_base_url + VOICE_PATH,
        "voice_method": "POST",
        "voice_fallback_url": fallback_url or public_base_url + FALLBACK_PATH,
        "voice_fallback_method": "POST",
        "status_callback": public_base_url + STATUS_PATH,
        "status_callback_method": "POST",
        # Empty detaches a TwiML App, which would otherwise win over every URL above.
        "voice_application_sid": "",
    }


def _refused_credentials(exc: BaseException) -> bool:
    """401 / 20003. A list request fails inside the SDK's paging as a plain TwilioException
    carrying the HTTP response, not as a TwilioRestException, so both shapes are looked at."""
    if isinstance(exc, TwilioRestException):
        return bool(exc.status == 401 or exc.code == AUTHENTICATION_FAILED)
    response = exc.args[1] if len(exc.args) > 1 else None
    return getattr(response, "status_code", None) == 401


def _find(client: Any, phone_number: str) -> Any:
    try:
        found = client.incoming_phone_numbers.list(phone_number=phone_number, limit=2)
    except (TwilioException, OSError) as exc:
        if _refused_credentials(exc):
            raise NumberError(
                "Twilio refused the credentials: check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
            ) from exc
        raise NumberError(f"listing the account's numbers failed: {describe(exc)}") from exc
    if not found:
        raise NumberError(f"{phone_number} is not a number on this account (IncomingPhoneNumbers)")
    return found[0]


def configure(
    client: Any, phone_number: str, fields: dict[str, str], *, dry_run: bool
) -> list[Change]:
    """Compare the number's configuration with ``fields``; update it unless ``dry_run``."""
    number = _find(client, phone_number)
    if getattr(number, "trunk_sid", None):
        raise NumberError(
            f"{phone_number} belongs to SIP trunk {number.trunk_sid}: the trunk routes its calls,"
            " not the voice URL; remove it from the trunk first"
        )
    changes = [Change(name, getattr(number, name, None), value) for name, value in fields.items()]
    todo = {c.field: c.after or "" for c in changes if c.changed}
    if todo and not dry_run:
        try:
            updated = client.incoming_phone_numbers(number.sid).update(**todo)
        except (TwilioException, OSError) as exc:
            raise NumberError(f"updating {phone_number} failed: {describe(exc)}") from exc
        changes = [Change(c.field, c.before, getattr(updated, c.field, None)) for c in changes]
    return changes


def render(phone_number: str, changes: Sequence[Change], *, dry_run: bool, out: TextIO) -> None:
    """One line per field: ``field: before → after`` or ``field: value (unchanged)``."""
    verb = "would change" if dry_run else "changed"
    count = sum(c.changed for c in changes)
    out.write(f"{phone_number}: {count} field(s) {verb}{' (dry run)' if dry_run else ''}\n")
    for change in changes:
        before = change.before or "(empty)"
        if change.changed:
            out.write(f"  {change.field}: {before} → {change.after or '(empty)'}\n")
        else:
            out.write(f"  {change.field}: {before} (unchanged)\n")


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """The command line; 0 on success, 1 with one line on stderr otherwise."""
    parser = argparse.ArgumentParser(
        prog="python -m bridge.telephony.number",
        description="Point a Twilio number's voice webhook, fallback and status callback at "
        "this deployment's PUBLIC_BASE_URL.",
    )
    parser.add_argument("phone_number", help="the number on your account, E.164 (+15551234567)")
    parser.add_argument("--dry-run", action="store_true", help="print the changes, make none")
    parser.add_argument(
        "--fallback-url",
        help="the 'Primary handler fails' URL (default: this deployment's /twilio/fallback; "
        "give another instance's to survive this host being down)",
    )
    args = parser.parse_args(argv)
    try:
        access = twilio_access(read_environment())
        client = rest_client(access.account_sid, access.auth_token, access.api_base_url)
        fields = wanted_fields(access.public_base_url, args.fallback_url)
        changes = configure(client, args.phone_number, fields, dry_run=args.dry_run)
    except (ConfigError, NumberError) as exc:
        sys.stderr.write(f"bridge.telephony.number: {exc}\n")
        return 1
    render(args.phone_number, changes, dry_run=args.dry_run, out=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
