"""No secret in a run's logs: a logging filter on every handler Prefect configured (API, console, debug).

Prefect ships a flow run's log records to the API (stored in the server's database) and to the console (the
runner's output: the local stack writes it to a file). A filter on the *handlers* sees every record that reaches
them, whichever logger emitted it and however it propagated, including the engine's "Task run failed" records with
their tracebacks; a filter on a logger (as Prefect's own `ObfuscateApiKeyFilter` on `get_logger` loggers) only sees
records logged on that very logger. `install_log_redaction()` is called at the start of `run_agent` and of the
deploy pipeline's flow; call it first thing in a flow of your own that logs before `run_agent`. Idempotent.
"""

from __future__ import annotations

import logging

from prefect_micro_agents.secrets import redact, secret_values

__all__ = ["RedactingFilter", "install_log_redaction"]


class RedactingFilter(logging.Filter):
    """Redacts a record in place before a handler formats it: message (with its args merged), exception and stack
    text. It never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = secret_values()
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler's own error reporting
            return True
        record.msg, record.args = redact(message, secrets), None
        if record.exc_info:
            # Formatters print `exc_text` when it is set; clearing `exc_info` keeps any handler from re-rendering
            # the live exception (and its message) from the traceback object.
            record.exc_text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        return True


def _handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    return list({id(h): h for logger in loggers for h in logger.handlers}.values())


def install_log_redaction() -> int:
    """Add a `RedactingFilter` to every handler of every configured logger that has none; returns how many got one."""
    added = 0
    for handler in _handlers():
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
            added += 1
    return added
