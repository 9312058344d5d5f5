"""Log lines: JSON when asked, call SID on every line, phone numbers masked."""

from __future__ import annotations

import io
import json
import logging

from bridge.ops.logs import JsonFormatter, MaskingFilter, call_logger, mask_number, mask_numbers


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(MaskingFilter())
    logger = logging.getLogger(f"test-logs-{id(out)}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, out


def test_numbers_are_masked() -> None:
    assert mask_number("+15551234567") == "+1555•••••67"
    assert mask_numbers("from +34911222333 to +15557654321.") == (
        "from +3491•••••33 to +1555•••••21."
    )


def test_json_lines_carry_the_call_and_leg_and_no_full_number() -> None:
    logger, out = capture(JsonFormatter())
    adapter = call_logger(logger.name, "CA" + "1" * 32, "caller")
    adapter.info("dialling %s failed", "+15557654321")
    entry = json.loads(out.getvalue())
    assert entry["call"] == "CA" + "1" * 32 and entry["part"] == "caller"
    assert entry["level"] == "INFO" and "+15557654321" not in out.getvalue()
    assert entry["message"].endswith("dialling +1555•••••21 failed")
