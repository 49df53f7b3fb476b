"""Credentials out of URLs (``scheme://user:pass@host`` → ``scheme://***@host``), for logs, audit entries, DSNs."""

from __future__ import annotations

import re

# userinfo ends at the first "@"; it cannot hold "/", "?", "#", whitespace or a quote, so a later "@" in a path,
# a query or the next word is left alone
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s\"']+@")


def redact_url_credentials(text: str) -> str:
    """``text`` with the user and password of every URL in it replaced by ``***``."""
    return _URL_USERINFO.sub(r"\g<scheme>***@", text)
