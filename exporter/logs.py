"""Logging: structlog, one event per line, logfmt (default) or JSON, on stderr.

Modules take ``log = logs.get_logger()``. structlog itself is imported at the
first event that passes the level, so a one-shot command that logs nothing
never pays for it (a third of a short command's run time).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO, cast

LEVELS = ("debug", "info", "warn", "error")
FORMATS = ("logfmt", "json")
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40  # the logging module's numbers, which structlog takes
_NUMERIC = {"debug": DEBUG, "info": INFO, "warn": WARNING, "error": ERROR}

_level = INFO
_format = "logfmt"
_logger: Any = None


def configure(level: str = "info", fmt: str = "logfmt") -> None:
    global _level, _format, _logger
    _level, _format, _logger = _NUMERIC[level], fmt, None


def _structlog() -> Any:
    global _logger
    if _logger is None:
        import structlog

        renderer = (
            structlog.processors.JSONRenderer()
            if _format == "json"
            else structlog.processors.LogfmtRenderer(
                key_order=["ts", "level", "event"], drop_missing=True, bool_as_flag=False
            )
        )
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", key="ts"),
                structlog.processors.format_exc_info,
                renderer,
            ],
            wrapper_class=structlog.make_filtering_bound_logger(_level),
            logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _Stderr())),
            cache_logger_on_first_use=False,
        )
        _logger = structlog.get_logger()
    return _logger


class _Stderr:
    """Whatever sys.stderr is when a line is written, not the stream it was at the first line: a
    stream replaced since (closed, redirected) takes no line with it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class Logger:
    """structlog's bound-logger calls, filtered by level before structlog is loaded."""

    def _emit(self, level: int, method: str, event: str, kw: dict) -> None:
        if level >= _level:
            getattr(_structlog(), method)(event, **kw)

    def debug(self, event: str, **kw: Any) -> None:
        self._emit(DEBUG, "debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._emit(INFO, "info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._emit(WARNING, "warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._emit(ERROR, "error", event, kw)

    def exception(self, event: str, **kw: Any) -> None:
        self._emit(ERROR, "exception", event, kw)


def get_logger() -> Logger:
    return Logger()
