"""Credentials out of URLs (``scheme://user:pass@host`` → ``scheme://***@host``), for logs, audit entries, DSNs.

The other redactions build on this one: a log line also loses every registered secret (``base.logs``),
a webhook endpoint's error text its own URL and secrets (``sinks.webhook.config.Endpoint.hide_own``).
"""

from __future__ import annotations

import re
from typing import Any

# userinfo ends at the first "@"; it cannot hold "/", "?", "#", whitespace or a quote, so a later "@" in a path,
# a query or the next word is left alone
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s\"']+@")


def redact_url_credentials(text: str) -> str:
    """``text`` with the user and password of every URL in it replaced by ``***``."""
    return _URL_USERINFO.sub(r"\g<scheme>***@", text)


def without_url_credentials(value: Any) -> Any:
    """The value (text, or dicts and lists of them) with ``user:password@`` removed from every URL in it."""
    if isinstance(value, str):
        return redact_url_credentials(value)
    if isinstance(value, dict):
        return {k: without_url_credentials(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_url_credentials(v) for v in value]
    return value
