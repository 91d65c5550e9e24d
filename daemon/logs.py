"""structlog set-up: JSON lines under systemd, readable console under `make run`.

Two processors run on every event whatever the renderer: phone numbers anywhere in a value
are masked the way the portals show them (`010****5678`), and values of secret-looking keys
(password, dsn, api key, authorization) are replaced by `***`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from config.schema import LogConfig
from handlers.numbers import mask

# Korean numbers as people and systems write them: 010-1234-5678, 01012345678, 02-123-4567,
# 1588-1234, +82 10 1234 5678. Digits glued to other digits (ids, timestamps) are left alone.
_PHONE = re.compile(
    r"(?<![\d\w])(?:\+82[ -]?|82-)?"
    r"(?:0?1[016789][ .-]?\d{3,4}[ .-]?\d{4}"  # mobile
    r"|0(?:2|[3-6][1-5]|70|50\d?|80)[ .-]?\d{3,4}[ .-]?\d{4}"  # area code, 070, 050x, 080
    r"|1[5-8]\d{2}[ .-]?\d{4})"  # 15YY/16YY/18YY
    r"(?![\d\w])"
)
_SECRET_KEYS = re.compile(r"(password|passwd|secret|dsn|api_?key|authorization|token)", re.I)


def mask_phone_numbers(text: str) -> str:
    """Mask every Korean phone number found in free text."""
    return _PHONE.sub(lambda m: _mask_match(m.group(0)), text)


def _mask_match(found: str) -> str:
    digits = re.sub(r"\D", "", found)
    if digits.startswith("82"):
        digits = "0" + digits[2:]
    return mask(digits)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return mask_phone_numbers(value)
    if isinstance(value, dict):
        return {k: ("***" if _is_secret(k, v) else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _is_secret(key: object, value: object) -> bool:
    return isinstance(key, str) and value is not None and bool(_SECRET_KEYS.search(key))


def scrub_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask phone numbers and redact secrets in every field."""
    for key, value in list(event_dict.items()):
        if _is_secret(key, value):
            event_dict[key] = "***"
        elif key != "event":
            event_dict[key] = _scrub(value)
    return event_dict


class _CurrentStderr:
    """Writes to whatever sys.stderr is now (tests and redirections swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def use_json(config: LogConfig) -> bool:
    """Whether to render JSON lines (systemd or not a terminal) rather than console text."""
    if config.format != "auto":
        return config.format == "json"
    under_systemd = "INVOCATION_ID" in os.environ or "JOURNAL_STREAM" in os.environ
    return under_systemd or not sys.stderr.isatty()


def configure_logging(config: LogConfig, *, force_json: bool | None = None) -> None:
    """Configure structlog (and stdlib logging of libraries) once at start-up."""
    json_lines = use_json(config) if force_json is None else force_json
    level = getattr(logging, config.level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        scrub_processor,
    ]
    renderer: Any
    if json_lines:
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr,
                        format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("asyncpg.pool").addFilter(_without_traceback)
    logging.getLogger("aiohttp.server").addFilter(_without_traceback)


def _without_traceback(record: logging.LogRecord) -> bool:
    """One line instead of a traceback: asyncpg logs one each time it fails to refill the pool
    while the database is away (the daemon reports the outage itself), aiohttp one for each
    malformed request it answers 400 (a client's fault, not ours)."""
    if record.exc_info:
        record.msg = f"{record.msg}: {record.exc_info[1]!r}"
        record.exc_info = None
        record.exc_text = None
    return True
