"""Logs never show a whole phone number or a secret, whatever field carries it."""

from __future__ import annotations

import json

import structlog

from config.schema import LogConfig
from daemon.logs import configure_logging, mask_phone_numbers, scrub_processor


def test_numbers_in_free_text_are_masked_as_the_portals_show_them() -> None:
    assert mask_phone_numbers("from 010-1234-5678 to 01098765432") == (
        "from 010****5678 to 010****5432")
    assert mask_phone_numbers("+82 10 1234 5678 called") == "010****5678 called"
    assert mask_phone_numbers("rep 1588-1234") == "rep ****1234"


def test_ids_and_timestamps_are_not_mistaken_for_numbers() -> None:
    text = "message_id=201012345678901 at 20261123141500 seq 0101"
    assert mask_phone_numbers(text) == text


def test_processor_masks_nested_values_and_redacts_secret_keys() -> None:
    event = {"event": "sms_sent", "to": ["01012345678"], "meta": {"from": "02-123-4567"},
             "password": "pw", "dsn": "postgresql://u:secret@h/db", "count": 3}
    out = scrub_processor(None, "info", dict(event))
    assert out["to"] == ["010****5678"]
    assert "1234567" not in json.dumps(out["meta"])
    assert out["password"] == "***" and out["dsn"] == "***" and out["count"] == 3


def test_rendered_json_log_line_is_masked(capsys) -> None:  # type: ignore[no-untyped-def]
    configure_logging(LogConfig(format="json"), force_json=True)
    structlog.get_logger("t").info("call_ringing", caller="010-5555-1234", password="x")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["caller"] == "010****1234" and record["password"] == "***"
    assert record["event"] == "call_ringing"
