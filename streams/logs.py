"""Structured logs: logfmt lines (key=value), with the ``extra`` fields of each call."""

from __future__ import annotations

import logging
import logging.config

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                fields[key] = value
        line = " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


NOISY = (
    "aiokafka", "kafka", "mode", "faust.transport", "faust.tables", "faust.app", "faust.agents", "faust.web",
    "faust.sensors", "faust.stores", "faust.assignor", "faust.worker", "httpx", "httpcore",
)  # fmt: skip


def logging_config(level: str = "INFO") -> dict[str, object]:
    """A ``logging.config.dictConfig`` for the worker: logfmt on stderr, chatty libraries at WARNING."""
    level = level.upper()
    quieter = max(logging.WARNING, logging.getLevelName(level))
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"logfmt": {"()": LogfmtFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "logfmt", "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {name: {"level": logging.getLevelName(quieter)} for name in NOISY},
    }


def configure(level: str = "INFO") -> None:
    logging.config.dictConfig(logging_config(level))
