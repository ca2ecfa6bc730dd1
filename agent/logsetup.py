"""One log format for both daemons: structlog, rendered as text (key=value) or JSON lines.

The agent logs through structlog, the controller through the standard library's ``logging``;
both end in one stdlib handler whose :class:`structlog.stdlib.ProcessorFormatter` renders every
record the same way, so ``--log-format json`` gives one JSON object per line from either daemon
(with ``timestamp``, ``level``, ``logger``, ``event`` and the line's own fields, e.g.
``workflow_id``, ``task_id``, ``attempt_id``), and ``text`` gives the same fields as ``key=value``.

The controller imports this module too (agents are installed without the controller, never the
other way round), so the format cannot drift between the two.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

__all__ = ["LOG_FORMATS", "configure", "default_format"]

LOG_FORMATS = ("text", "json")
_ENV = "CORRAL_LOG_FORMAT"


def default_format() -> str:
    """``$CORRAL_LOG_FORMAT`` when it names a format, else ``text``: the default of ``--log-format``."""
    value = os.environ.get(_ENV, "").strip().lower()
    return value if value in LOG_FORMATS else "text"


def configure(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to ``stream`` (stderr) at ``level``, in ``fmt`` (text or json)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    number = logging.getLevelNamesMapping()[level.upper()]
    # Run for every record, structlog's and stdlib's alike (stdlib ones get their `extra=` fields).
    shared: list[Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer(default=str)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    formatter = _FastFormatter(
        fmt == "json",
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # One field for tracebacks in JSON (a string), so a line stays one parseable object.
            *([structlog.processors.format_exc_info] if fmt == "json" else []),
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # Debug is ours alone: grpc, asyncio and aiohttp at debug would drown the lines that matter.
    root.setLevel(max(number, logging.INFO))
    logging.getLogger("corral").setLevel(number)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        # Filtering at the bound logger: a disabled level costs one no-op call, no formatting.
        wrapper_class=structlog.make_filtering_bound_logger(number),
        cache_logger_on_first_use=True,
    )


# Attributes every LogRecord has: what is left in a record's __dict__ are its ``extra=`` fields.
_RECORD_KEYS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class _FastFormatter(structlog.stdlib.ProcessorFormatter):
    """The ProcessorFormatter, with a direct path for plain stdlib records.

    The controller's lines (event-log entries, audit records) are stdlib records with a few string
    fields; the processor chain plus ConsoleRenderer cost about 200 µs each, a real share of a
    one-task workflow's round trip. They are rendered here into exactly the same text or JSON in a
    few µs. structlog's records, and lines with a traceback or odd fields, take the full chain.
    """

    def __init__(self, json_lines: bool, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._json = json_lines
        self._second = -1
        self._stamp = ""

    def _timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # one strftime per second of log lines
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1e6):06d}Z"

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, dict) or record.exc_info or record.stack_info:
            return super().format(record)
        fields = {k: v for k, v in vars(record).items() if k not in _RECORD_KEYS and not k.startswith("_")}
        if not all(type(v) is str for v in fields.values()):  # only the common case is worth a copy
            return super().format(record)
        event = record.getMessage()
        level = record.levelname.lower()
        stamp = self._timestamp(record.created)
        if self._json:
            line = {"event": event, "level": level, "logger": record.name, **fields, "timestamp": stamp}
            return json.dumps(line, default=str)
        pairs = " ".join(f"{key}={fields[key]}" for key in sorted(fields))
        return f"{stamp} [{level:<9}] {event:<30} [{record.name}]{' ' if pairs else ''}{pairs}"
