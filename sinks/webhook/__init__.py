"""Signed webhooks for alert events: endpoints, payload, Standard Webhooks signatures, durable delivery."""

from sinks.webhook.config import (
    EndpointConfig,
    RetryPolicy,
    Secret,
    Subscription,
    UnsafeUrlError,
    WebhookConfig,
    WebhookConfigError,
    check_url,
    config_from_settings,
    load_webhook_config,
    new_secret,
)
from sinks.webhook.dispatcher import WebhookDispatcher
from sinks.webhook.payload import Names, build_payload, load_names
from sinks.webhook.redeliver import Redelivery, redeliver, redeliver_sync

__all__ = [
    "EndpointConfig",
    "Names",
    "Redelivery",
    "RetryPolicy",
    "Secret",
    "Subscription",
    "UnsafeUrlError",
    "WebhookConfig",
    "WebhookConfigError",
    "WebhookDispatcher",
    "build_payload",
    "check_url",
    "config_from_settings",
    "load_names",
    "load_webhook_config",
    "new_secret",
    "redeliver",
    "redeliver_sync",
]
