"""The JSON log format and the masking of passwords, without I/O."""

from __future__ import annotations

import json
import logging

from payout_manager.logs import JsonFormatter, masked


def test_a_url_password_is_masked_wherever_it_appears() -> None:
    text = "cannot reach postgresql+psycopg2://pm:p%40ss@db:5432/payouts; kafka at sasl://u:pw@k:9092"

    assert (
        masked(text)
        == "cannot reach postgresql+psycopg2://pm:***@db:5432/payouts; kafka at sasl://u:***@k:9092"
    )


def test_text_without_a_password_is_left_alone() -> None:
    text = "postgresql://pm@db:5432/payouts at 12:30, ratio 1:2"

    assert masked(text) == text


def test_a_record_becomes_one_json_line_with_the_call_fields() -> None:
    record = logging.LogRecord("api", logging.INFO, __file__, 1, "%s %s", ("CreatePayout", "OK"), None)
    record.method, record.code, record.request_id = "CreatePayout", "OK", "r-1"

    line = JsonFormatter().format(record)

    assert "\n" not in line
    entry = json.loads(line)
    assert {k: entry[k] for k in ("level", "logger", "message", "method", "code", "request_id")} == {
        "level": "INFO",
        "logger": "api",
        "message": "CreatePayout OK",
        "method": "CreatePayout",
        "code": "OK",
        "request_id": "r-1",
    }
