"""structlog, configured once: JSON lines when stderr is not a terminal, readable otherwise.

Never log personal data: log ids (event, site, child ids), counts and reasons, not names,
phone numbers or resident ID numbers.

The libraries' own logging (nats-py, asyncio, uvicorn, litestar: the stdlib `logging` module)
goes through the same renderer (`structlog.stdlib.ProcessorFormatter` on the root logger), so
every line on stderr has one format. An exception a library logs becomes one `exception` field
("Type: message"), not a raw traceback. uvicorn's access log (`uvicorn_log_config`) writes one
line per request with method, path, status and HTTP version: the path without its query string
(search terms are children's names), and no headers (no cookies, no tokens).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_configured = False
ACCESS_LOGGER = "uvicorn.access"


def _logger_name(logger: Any, method: str, event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
    record = event_dict.get("_record")
    if record is not None:
        event_dict.setdefault("logger", record.name)
    return event_dict


def _one_line_exception(logger: Any, method: str, event_dict: structlog.typing.EventDict
                        ) -> structlog.typing.EventDict:
    """A library's exc_info as "Type: message" (operators read one line; the traceback would
    only repeat the library's insides)."""
    record = event_dict.get("_record")
    exc_info = event_dict.pop("exc_info", None)
    if exc_info is None and record is not None:
        exc_info = record.exc_info
    if exc_info:
        if exc_info is True:
            exc_info = sys.exc_info()
        if isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        etype, value = exc_info[0], exc_info[1]
        if etype is not None:
            text = str(value) if value is not None else ""
            event_dict["exception"] = f"{etype.__name__}: {text}"[:500] if text else etype.__name__
    if record is not None:  # keep the formatter from appending the traceback after our line
        record.exc_info = None
        record.exc_text = None
    return event_dict


def strip_query(path: str) -> str:
    """A request path without its query string (which may carry children's names)."""
    return path.split("?", 1)[0]


class AccessFilter(logging.Filter):
    """On uvicorn's access logger: turns each request record into fields (method, path without
    its query string, status, HTTP version, client address) before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, full_path, http_version, status = args
            record.access = {"method": method, "path": strip_query(str(full_path)), "status": status,
                             "http": http_version, "client": str(client).rsplit(":", 1)[0]}
        record.msg, record.args = "http request", ()
        return True


def _access_fields(logger: Any, method: str, event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """The fields AccessFilter put on an access record."""
    record = event_dict.get("_record")
    fields = getattr(record, "access", None)
    if isinstance(fields, dict):
        event_dict.update(fields)
    return event_dict


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a line is logged (as structlog's PrintLogger does)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


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
    numeric = getattr(logging, level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # The stdlib side: every library logger propagates to the root, rendered like our own lines.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            _logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _access_fields,
            _one_line_exception,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    global _handler, _level
    _handler = _StderrHandler()
    _handler.setFormatter(formatter)
    _handler.set_name("shouwang")
    _level = numeric
    route_libraries()


_handler: logging.Handler | None = None
_level = logging.INFO
# Loggers that libraries give handlers of their own (litestar's LoggingConfig, uvicorn's default
# config): emptied and made to propagate, so their lines reach the root logger and structlog.
LIBRARY_LOGGERS = ("litestar", "uvicorn", "uvicorn.error", "uvicorn.access", "nats", "asyncio")


def route_libraries() -> None:
    """(Re)install the structlog handler as the root logger's only handler and send the
    libraries' loggers to it. `configure` calls it; call it again after creating a litestar app,
    whose default logging configuration replaces the root logger's handlers."""
    if _handler is None:
        return
    root = logging.getLogger()
    for old in list(root.handlers):
        if old is not _handler:
            root.removeHandler(old)
    if _handler not in root.handlers:
        root.addHandler(_handler)
    root.setLevel(_level)
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
    access = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, AccessFilter) for f in access.filters):
        access.addFilter(AccessFilter())


def uvicorn_log_config() -> dict[str, Any]:
    """`uvicorn.run(log_config=...)`: uvicorn's loggers without handlers of their own, so their
    lines (access log included) go to the root logger and through structlog (see above)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"access": {"()": AccessFilter}},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            ACCESS_LOGGER: {"handlers": [], "propagate": True, "filters": ["access"]},
        },
    }


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
