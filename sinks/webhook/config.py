"""Webhook endpoints: a YAML file plus the environment, checked when loaded.

Secrets come from an environment variable or a file and live only inside :class:`Secret`, whose
``repr`` hides them; URLs are checked before use (https, or http to allow-listed hosts; loopback and
private addresses only when the endpoint says ``allow_private``). A URL may carry a token in its path
or query (chat webhooks do), so logs show :attr:`EndpointConfig.display_url`, never the URL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import re
import secrets as _random
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from base.config import DEFAULT_GRAFANA_URL
from base.logs import register_secret

SECRET_PREFIX = "whsec_"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
EVENT_TYPES = ("firing", "resolved", "repeat")


class WebhookConfigError(ValueError):
    """A configuration problem; the message names the endpoint and setting, never a secret."""


class UnsafeUrlError(WebhookConfigError):
    """The URL may not be used: wrong scheme, http to a host not allow-listed, or a private address."""


class Secret:
    """A signing secret (``whsec_`` + base64 of 24–64 bytes) that never shows itself in logs or reprs."""

    __slots__ = ("_key", "_text")

    def __init__(self, text: str, where: str = "secret") -> None:
        body = text.strip()
        body = body[len(SECRET_PREFIX) :] if body.startswith(SECRET_PREFIX) else body
        try:
            key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise WebhookConfigError(f"{where} is not a valid whsec_ secret (base64)") from None
        if not 24 <= len(key) <= 64:
            raise WebhookConfigError(f"{where} must decode to 24–64 bytes, decodes to {len(key)}")
        self._key = key
        self._text = SECRET_PREFIX + base64.b64encode(key).decode()
        for form in (body, self._text[len(SECRET_PREFIX) :]):  # as given and canonical
            register_secret(form.rstrip("="))  # belt and braces: even a careless log line shows *** instead

    @property
    def key(self) -> bytes:
        """The HMAC key: the base64-decoded part of the secret."""
        return self._key

    def reveal(self) -> str:
        """The secret as a receiver configures it (``whsec_…``); for tests and key hand-over only."""
        return self._text

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(hashlib.sha256(self._key).digest())

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not pickled (it would leave the process in clear)")


def new_secret() -> str:
    """A fresh ``whsec_`` secret (32 random bytes) to give to a receiver."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(32)).decode()


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, up to a horizon counted from an event's first attempt."""

    initial_s: float = 30.0
    multiplier: float = 2.0
    max_s: float = 1800.0
    horizon_s: float = 6 * 3600.0
    jitter: float = 0.2  # each delay is drawn from [delay * (1 - jitter), delay]

    def delay(self, attempt: int, draw: float) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based); ``draw`` is uniform in [0, 1)."""
        base = min(self.max_s, self.initial_s * self.multiplier ** max(0, attempt - 1))
        return base * (1.0 - self.jitter * draw)

    def check(self, where: str) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s or self.multiplier < 1 or self.horizon_s < 0:
            raise WebhookConfigError(f"{where}: need 0 < initial_s <= max_s, multiplier >= 1, horizon_s >= 0")
        if not 0 <= self.jitter < 1:
            raise WebhookConfigError(f"{where}: jitter must be in [0, 1)")


@dataclass(frozen=True)
class Subscription:
    """What an endpoint receives; an empty list means everything for that dimension.

    An event lacking a label (``dormant_issuer`` has no sector) matches only an empty filter on it.
    ``'*'`` is the roll-up label value: all sectors, or the whole province.
    """

    rules: frozenset[str] = frozenset()
    sectors: frozenset[str] = frozenset()
    units: frozenset[str] = frozenset()
    severities: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()

    def matches(self, event: Mapping[str, Any]) -> bool:
        labels = event.get("labels") or {}
        checks = (
            (self.rules, event.get("rule")), (self.severities, event.get("severity")),
            (self.types, event.get("type")), (self.sectors, labels.get("sector")), (self.units, labels.get("unit")),
        )  # fmt: skip
        return all(not wanted or value in wanted for wanted, value in checks)


@dataclass(frozen=True)
class EndpointConfig:
    name: str
    url: str = field(repr=False)
    secrets: tuple[Secret, ...] = field(repr=False)  # the first signs; more during a rotation
    subscribe: Subscription = Subscription()
    timeout_s: float = 10.0
    enabled: bool = True
    allow_private: bool = False
    retry: RetryPolicy = RetryPolicy()
    backfill_s: float = 86400.0  # how far back a new endpoint starts in the alert history
    secret_source: str = ""  # "env:VAR" or "file:PATH", for messages

    @property
    def display_url(self) -> str:
        """Scheme, host and port only: paths and queries of webhook URLs often carry tokens."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…"

    @property
    def url_digest(self) -> str:
        """Identifies the URL in stored state without storing it."""
        return hashlib.sha256(self.url.encode()).hexdigest()[:16]

    @property
    def group_id_suffix(self) -> str:
        return f"webhook-{self.name}"

    def hide_own(self, text: str) -> str:
        """``text`` with the URL, its path and query, and every secret form replaced by ``***``."""
        parts = urlsplit(self.url)
        needles = [self.url, parts.path if len(parts.path) > 1 else "", parts.query]
        for secret in self.secrets:
            b64 = base64.b64encode(secret.key).decode()
            needles += [secret.reveal(), b64, b64.rstrip("="), secret.key.hex(), repr(secret.key)]
        for needle in sorted((n for n in needles if n), key=len, reverse=True):
            text = text.replace(needle, "***")
        return text


@dataclass(frozen=True)
class WebhookConfig:
    endpoints: tuple[EndpointConfig, ...] = ()
    http_allowlist: frozenset[str] = frozenset()
    grafana_url: str = DEFAULT_GRAFANA_URL

    def endpoint(self, name: str) -> EndpointConfig | None:
        return next((e for e in self.endpoints if e.name == name), None)


# -- URL checks -----------------------------------------------------------------------------------------------------


def _forbidden(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Loopback, private, link-local, shared, reserved, multicast or unspecified: not the public internet."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast or ip.is_unspecified


def check_url_syntax(url: str, *, allow_private: bool, http_allowlist: Iterable[str], where: str) -> None:
    """Scheme, host, no credentials, http only to allow-listed hosts, no private IP literals unless allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise UnsafeUrlError(f"{where}: the URL must be https (or http to an allow-listed host)")
    if not parts.hostname:
        raise UnsafeUrlError(f"{where}: the URL has no host")
    if parts.username or parts.password:
        raise UnsafeUrlError(f"{where}: credentials in the URL are not supported; the signature authenticates")
    if parts.fragment:
        raise UnsafeUrlError(f"{where}: the URL must not have a fragment")
    host = parts.hostname.lower()
    if parts.scheme == "http" and host not in {h.lower() for h in http_allowlist}:
        raise UnsafeUrlError(f"{where}: http is allowed only to hosts on the allowlist; {host} is not on it")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if (host == "localhost" or host.endswith(".localhost")) and not allow_private:
            raise UnsafeUrlError(f"{where}: {host} is loopback; set allow_private to use it") from None
        return
    if _forbidden(ip) and not allow_private:
        raise UnsafeUrlError(f"{where}: {host} is a loopback or private address; set allow_private to use it")


def resolved_addresses(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (raises ``socket.gaierror`` when it does not resolve)."""
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)})


def check_addresses(addresses: Iterable[str], *, allow_private: bool, host: str, where: str) -> None:
    """A hostname that resolves to a private address is refused like the address itself."""
    if allow_private:
        return
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if _forbidden(ip):
            raise UnsafeUrlError(f"{where}: {host} resolves to a loopback or private address; set allow_private")


def check_url(url: str, *, allow_private: bool, http_allowlist: Iterable[str], where: str = "url") -> None:
    """Syntax and resolved addresses (blocking: resolves the host)."""
    check_url_syntax(url, allow_private=allow_private, http_allowlist=http_allowlist, where=where)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    assert parts.hostname is not None
    check_addresses(
        resolved_addresses(parts.hostname, port), allow_private=allow_private, host=parts.hostname, where=where
    )


# -- loading --------------------------------------------------------------------------------------------------------

_ENDPOINT_KEYS = {
    "name", "url", "secret_env", "secret_file", "subscribe", "timeout_s", "enabled", "allow_private", "retry",
    "backfill_s",
}  # fmt: skip
_SUBSCRIBE_KEYS = {"rules", "sectors", "units", "severities", "types"}
_RETRY_KEYS = {"initial_s", "multiplier", "max_s", "horizon_s", "jitter"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_prefix(name: str) -> str:
    """``EINVOICE_WEBHOOK_<NAME>_``: per-endpoint overrides (``URL``, ``ENABLED``) from the environment."""
    return "EINVOICE_WEBHOOK_" + re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_"


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise WebhookConfigError(f"{where} must be true or false")


def _strings(value: Any, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str | int):
        value = [value]
    if not isinstance(value, list):
        raise WebhookConfigError(f"{where} must be a list")
    return frozenset(str(v) for v in value)


def _number(raw: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WebhookConfigError(f"{where}.{key} must be a number")
    return float(value)


def _unknown(raw: Mapping[str, Any], known: set[str], where: str) -> None:
    extra = set(raw) - known
    if extra:
        raise WebhookConfigError(
            f"{where}: unknown setting(s) {', '.join(sorted(extra))} (known: {', '.join(sorted(known))})"
        )


def _read_secrets(
    raw: Mapping[str, Any], env: Mapping[str, str], base_dir: Path, where: str
) -> tuple[tuple[Secret, ...], str]:
    """Whitespace-separated ``whsec_`` secrets (first = current, others = still valid during a rotation)."""
    if ("secret_env" in raw) == ("secret_file" in raw):
        raise WebhookConfigError(f"{where}: set exactly one of secret_env or secret_file")
    if "secret_env" in raw:
        var = str(raw["secret_env"])
        source = f"env:{var}"
        text = env.get(var)
        if not text:
            raise WebhookConfigError(f"{where}: environment variable {var} (the secret) is not set")
    else:
        path = Path(str(raw["secret_file"])).expanduser()
        path = path if path.is_absolute() else base_dir / path
        source = f"file:{path}"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise WebhookConfigError(f"{where}: cannot read the secret file {path} ({exc.strerror})") from None
    found = tuple(Secret(part, f"{where}: secret #{i + 1} from {source}") for i, part in enumerate(text.split()))
    if not found:
        raise WebhookConfigError(f"{where}: the secret from {source} is empty")
    return found, source


def parse_endpoint(
    raw: Mapping[str, Any], *, env: Mapping[str, str], base_dir: Path, http_allowlist: Iterable[str], where: str
) -> EndpointConfig:
    if not isinstance(raw, Mapping):
        raise WebhookConfigError(f"{where}: an endpoint must be a mapping")
    _unknown(raw, _ENDPOINT_KEYS, where)
    name = str(raw.get("name", ""))
    if not NAME_RE.match(name):
        raise WebhookConfigError(f"{where}: name must match {NAME_RE.pattern} (it names a consumer group)")
    where = f"{where} ({name})"
    prefix = env_prefix(name)
    url = env.get(prefix + "URL") or str(raw.get("url", ""))
    enabled = _bool(env.get(prefix + "ENABLED", raw.get("enabled", True)), f"{where}.enabled")
    allow_private = _bool(raw.get("allow_private", False), f"{where}.allow_private")
    check_url_syntax(url, allow_private=allow_private, http_allowlist=http_allowlist, where=where)
    secrets, source = _read_secrets(raw, env, base_dir, where)
    subscribe_raw = raw.get("subscribe") or {}
    _unknown(subscribe_raw, _SUBSCRIBE_KEYS, f"{where}.subscribe")
    subscribe = Subscription(**{k: _strings(subscribe_raw.get(k), f"{where}.subscribe.{k}") for k in _SUBSCRIBE_KEYS})
    if subscribe.types - set(EVENT_TYPES):
        raise WebhookConfigError(f"{where}.subscribe.types: known types are {', '.join(EVENT_TYPES)}")
    retry_raw = raw.get("retry") or {}
    _unknown(retry_raw, _RETRY_KEYS, f"{where}.retry")
    defaults = RetryPolicy()
    retry = RetryPolicy(**{k: _number(retry_raw, k, getattr(defaults, k), f"{where}.retry") for k in _RETRY_KEYS})
    retry.check(f"{where}.retry")
    timeout_s = _number(raw, "timeout_s", 10.0, where)
    backfill_s = _number(raw, "backfill_s", 86400.0, where)
    if timeout_s <= 0 or backfill_s < 0:
        raise WebhookConfigError(f"{where}: timeout_s must be > 0 and backfill_s >= 0")
    return EndpointConfig(
        name=name, url=url, secrets=secrets, subscribe=subscribe, timeout_s=timeout_s, enabled=enabled,
        allow_private=allow_private, retry=retry, backfill_s=backfill_s, secret_source=source,
    )  # fmt: skip


def load_webhook_config(
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    *,
    http_allowlist: Iterable[str] = (),
    grafana_url: str | None = None,
) -> WebhookConfig:
    """Read the endpoints file (a list, or a mapping with ``endpoints`` and ``http_allowlist``).

    ``path`` None means no webhooks. ``http_allowlist`` (from ``EINVOICE_WEBHOOK_HTTP_ALLOWLIST``) adds
    to the file's list. Errors name the file, the endpoint and the setting.
    """
    env = os.environ if environ is None else environ
    board = grafana_url or DEFAULT_GRAFANA_URL
    if path is None:
        return WebhookConfig(http_allowlist=frozenset(http_allowlist), grafana_url=board)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WebhookConfigError(f"webhooks file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise WebhookConfigError(f"webhooks file {path} is not valid YAML: {exc}") from None
    if raw is None:
        raw = []
    if isinstance(raw, list):
        raw = {"endpoints": raw}
    if not isinstance(raw, dict):
        raise WebhookConfigError(f"{path}: expected a list of endpoints or a mapping with `endpoints`")
    _unknown(raw, {"endpoints", "http_allowlist"}, str(path))
    allow = frozenset(
        h.lower() for h in [*_strings(raw.get("http_allowlist"), f"{path}: http_allowlist"), *http_allowlist]
    )
    endpoints = tuple(
        parse_endpoint(item, env=env, base_dir=path.parent, http_allowlist=allow, where=f"{path}: endpoints[{i}]")
        for i, item in enumerate(raw.get("endpoints") or [])
    )
    names = [e.name for e in endpoints]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise WebhookConfigError(f"{path}: endpoint names must be unique; repeated: {', '.join(duplicates)}")
    return WebhookConfig(endpoints=endpoints, http_allowlist=allow, grafana_url=board)


def config_from_settings(settings: Any, environ: Mapping[str, str] | None = None) -> WebhookConfig:
    """From :class:`base.config.Settings` (``webhooks_file``, ``webhook_http_allowlist``, ``grafana_url``)."""
    allowlist = [h.strip() for h in str(getattr(settings, "webhook_http_allowlist", "") or "").split(",") if h.strip()]
    return load_webhook_config(
        getattr(settings, "webhooks_file", None), environ, http_allowlist=allowlist,
        grafana_url=getattr(settings, "grafana_url", None) or None,
    )  # fmt: skip
