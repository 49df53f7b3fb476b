"""One HTTP attempt: check the URL, sign, POST, classify the answer.

2xx is success; 429, 5xx, connection errors and timeouts are worth retrying (``Retry-After`` is read);
410 means the receiver is gone for good; any other status (including redirects, which are not
followed: a redirect could lead past the URL check) is a permanent failure. Error texts are redacted
(URL, path, query and secrets replaced) before anything logs or stores them.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import socket
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import httpx

from sinks.webhook.config import EndpointConfig, UnsafeUrlError, check_addresses, check_url_syntax
from sinks.webhook.signing import headers

log = logging.getLogger(__name__)

# httpx logs every request with its full URL at INFO; webhook URLs often carry tokens.
if logging.getLogger("httpx").level == logging.NOTSET:
    logging.getLogger("httpx").setLevel(logging.WARNING)

Verdict = Literal["ok", "retry", "gone", "reject", "unsafe"]
MAX_ERROR_BODY = 300


@dataclass(frozen=True)
class AttemptResult:
    verdict: Verdict
    status: int  # 0 = no HTTP response
    latency_s: float
    error: str  # redacted; "" on success
    retry_after_s: float | None = None


def classify(status: int) -> Verdict:
    if 200 <= status < 300:
        return "ok"
    if status == 410:
        return "gone"
    if status == 429 or status >= 500:
        return "retry"
    return "reject"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


def make_client(endpoint: EndpointConfig) -> httpx.AsyncClient:
    """A client of the endpoint's own: a slow receiver's connections never hold another endpoint's pool."""
    return httpx.AsyncClient(
        follow_redirects=False, trust_env=False, timeout=httpx.Timeout(endpoint.timeout_s),
        limits=httpx.Limits(max_connections=2, max_keepalive_connections=1),
    )  # fmt: skip


async def check_before_send(endpoint: EndpointConfig, http_allowlist: frozenset[str]) -> None:
    """The URL check again, with the addresses the host resolves to now (DNS can change after start)."""
    where = f"endpoint {endpoint.name}"
    check_url_syntax(endpoint.url, allow_private=endpoint.allow_private, http_allowlist=http_allowlist, where=where)
    if endpoint.allow_private:
        return
    parts = urlsplit(endpoint.url)
    assert parts.hostname is not None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    check_addresses([str(i[4][0]) for i in infos], allow_private=False, host=parts.hostname, where=where)


async def send_once(
    client: httpx.AsyncClient, endpoint: EndpointConfig, event_id: str, body: bytes, http_allowlist: frozenset[str]
) -> AttemptResult:
    """POST the body once, signed with a fresh timestamp; never raises for network or HTTP trouble."""
    try:
        await check_before_send(endpoint, http_allowlist)
    except UnsafeUrlError as exc:
        return AttemptResult("unsafe", 0, 0.0, endpoint.hide_own(str(exc)))
    except OSError as exc:
        return AttemptResult("retry", 0, 0.0, endpoint.hide_own(f"cannot resolve the host: {exc.strerror or exc}"))
    sent_headers = headers(endpoint.secrets, event_id, int(time.time()), body)
    started = time.monotonic()
    try:
        async with asyncio.timeout(endpoint.timeout_s):
            async with client.stream("POST", endpoint.url, content=body, headers=sent_headers) as response:
                snippet = b""
                async for chunk in response.aiter_bytes():
                    snippet += chunk
                    if len(snippet) >= MAX_ERROR_BODY:
                        break
    except (TimeoutError, httpx.TimeoutException):
        return AttemptResult("retry", 0, time.monotonic() - started, f"timeout after {endpoint.timeout_s:g} s")
    except (httpx.HTTPError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        return AttemptResult("retry", 0, time.monotonic() - started, endpoint.hide_own(error))
    latency = time.monotonic() - started
    verdict = classify(response.status_code)
    if verdict == "ok":
        return AttemptResult("ok", response.status_code, latency, "")
    text = " ".join(snippet[:MAX_ERROR_BODY].decode("utf-8", "replace").split())
    error = f"HTTP {response.status_code}" + (f": {text}" if text else "")
    if 300 <= response.status_code < 400:
        error += " (redirects are not followed)"
    retry_after = parse_retry_after(response.headers.get("retry-after"), time.time())
    return AttemptResult(verdict, response.status_code, latency, endpoint.hide_own(error), retry_after)
