"""structlog set-up: JSON lines for machines, a console renderer in a terminal.

PAO's own log calls go through structlog's native filtering logger straight to stderr (a call
below the level costs one comparison; one at the level skips the standard library's records).
Libraries that log through the standard library are rendered the same way by a handler on the
root logger, so every line has one shape.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

#: Keys whose values never reach a log line.
REDACTED_KEYS = frozenset({"secret", "secret_access_key", "password", "token", "authorization"})


def _redact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key in event_dict.keys() & REDACTED_KEYS:
        event_dict[key] = "***"
    return event_dict


class _NamedLogger(structlog.PrintLogger):
    """A print logger that knows which module asked for it."""

    def __init__(self, name: str | None = None, file: TextIO | None = None) -> None:
        super().__init__(file or sys.stderr)
        self.name = name


def _add_logger_name(logger: Any, _: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    name = getattr(logger, "name", None)
    if name:
        event_dict.setdefault("logger", name)
    return event_dict


def console_renderer() -> structlog.dev.ConsoleRenderer:
    """structlog's console renderer, with tracebacks that never print local variables: a
    frame's locals hold secrets (a token, a resolved secret, a DSN) that no log line may show."""
    if structlog.dev.rich is not None:
        formatter: Any = structlog.dev.RichTracebackFormatter(show_locals=False)
    else:
        formatter = structlog.dev.plain_traceback
    return structlog.dev.ConsoleRenderer(exception_formatter=formatter)


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog and the standard library logging to share one output."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    numeric_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any = console_renderer() if use_console else structlog.processors.JSONRenderer()
    tail: list[Any] = [] if use_console else [structlog.processors.format_exc_info]
    structlog.configure(
        processors=[*shared, _add_logger_name, *tail, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=lambda *args: _NamedLogger(args[0] if args else None),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *tail,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    # Library chatter stays at warning unless asked for.
    for noisy in ("aiokafka", "asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, numeric_level))
    # At debug, botocore logs request and response bodies: Parameter Store values among them.
    for aws in ("botocore", "boto3"):
        logging.getLogger(aws).setLevel(max(logging.INFO, numeric_level))
