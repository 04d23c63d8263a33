"""structlog, configured once: JSON lines when stderr is not a terminal, readable otherwise.

Never log personal data: log ids (event, site, child ids), counts and reasons, not names,
phone numbers or resident ID numbers.
"""

from __future__ import annotations

import logging
import sys

import structlog

_configured = False


def configure(level: str = "info", json: bool | None = None) -> None:
    global _configured
    if _configured:
        return
    _configured = True
    # Libraries that log each HTTP request at INFO (httpx) would flood a terminal and, worse,
    # write URLs with child ids into logs; keep them to warnings.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    use_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
