"""Structured logs: logfmt lines (key=value), with the ``extra`` fields of each call.

Every line is redacted last, whatever produced it (a message, an extra field, a traceback of a
library's exception): credentials in URLs (``scheme://user:pass@host`` → ``scheme://***@host``)
and the values of secrets this process knows (secret-looking environment variables, the password
of ``CLICKHOUSE_URL``, webhook signing secrets as they are loaded) become ``***``.
"""

from __future__ import annotations

import logging
import logging.config
import os
import re
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from base.redaction import redact_url_credentials

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
# scheme://userinfo@ : the userinfo (a user, a user:password, a token) never reaches a log line
_SECRET_VARIABLE = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|API_?KEY|PRIVATE_KEY", re.IGNORECASE)
_URL_VARIABLES = ("CLICKHOUSE_URL", "KAFKA_BROKERS")
MIN_SECRET_CHARS = 6  # shorter values would redact ordinary words; such a secret is no secret anyway
_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Never show ``value`` in a log line from now on (webhook secrets call this as they are loaded)."""
    value = value.strip()
    if len(value) >= MIN_SECRET_CHARS:
        _secrets.add(value)


def register_environment_secrets(environ: Mapping[str, str] | None = None) -> None:
    """Secret-looking variables (``*PASSWORD*``, ``*SECRET*``, ``*TOKEN*``, …) and URL passwords."""
    env = os.environ if environ is None else environ
    for name, value in env.items():
        if _SECRET_VARIABLE.search(name):
            for part in value.split():  # a rotation lists several secrets, space-separated
                register_secret(part)
    for name in _URL_VARIABLES:
        for url in env.get(name, "").split(","):
            try:
                password = urlsplit(url.strip()).password
            except ValueError:
                continue
            if password:
                register_secret(password)
                register_secret(unquote(password))


def redact_line(text: str) -> str:
    """``text`` without URL credentials and without any registered secret."""
    text = redact_url_credentials(text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


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
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return redact_line(line)


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
    register_environment_secrets()
    level = level.upper()
    quieter = max(logging.WARNING, logging.getLevelName(level))
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"logfmt": {"()": LogfmtFormatter}},
        # a Kafka node's outage said once, not once per reconnect attempt (base/outages.py)
        "filters": {"outages": {"()": "base.outages.outage_log"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "logfmt",
                "stream": "ext://sys.stderr",
                "filters": ["outages"],
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {name: {"level": logging.getLevelName(quieter)} for name in NOISY},
    }


def configure(level: str = "INFO") -> None:
    register_environment_secrets()
    logging.config.dictConfig(logging_config(level))
