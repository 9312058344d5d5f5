"""Log lines: JSON when asked, call SID on every line, phone numbers masked."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bridge.ops.logs import (
    MENU_SPEECH_LOGGER,
    SPEECH_LOGGERS,
    JsonFormatter,
    MaskingFilter,
    call_logger,
    configure_logging,
    log_transcript,
    mask_number,
    mask_numbers,
)


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


class Catcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("log_speech", [False, True])
def test_speech_is_logged_only_with_log_speech_whatever_the_level(log_speech: bool) -> None:
    """LOG_LEVEL=DEBUG alone does not log what people said; LOG_SPEECH=on does, at DEBUG."""
    root = logging.getLogger()
    saved = (root.level, [logging.getLogger(n).level for n in SPEECH_LOGGERS])
    catcher = Catcher()
    caught = catcher.records
    root.addHandler(catcher)
    try:
        configure_logging("DEBUG", log_speech=log_speech)
        log_transcript("CA" + "2" * 32, "caller_to_agent", "source", "mi cuenta", 1200)
        logging.getLogger(MENU_SPEECH_LOGGER).debug("heard %r", "inglés")
    finally:
        root.removeHandler(catcher)
        root.setLevel(saved[0])
        for name, level in zip(SPEECH_LOGGERS, saved[1], strict=True):
            logging.getLogger(name).setLevel(level)
    said = [r for r in caught if r.name in SPEECH_LOGGERS]
    if not log_speech:
        assert said == []
    else:
        assert [r.levelno for r in said] == [logging.DEBUG, logging.DEBUG]
        assert "mi cuenta" in said[0].getMessage() and "inglés" in said[1].getMessage()
