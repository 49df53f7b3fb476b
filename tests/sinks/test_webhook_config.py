"""Webhook configuration, URL checks, secrets, signatures and the payload contract (no broker, no HTTP)."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import math
import pickle
import socket
import time
from email.utils import format_datetime
from pathlib import Path

import jsonschema
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from alerts.lifecycle import AlertEvent, fingerprint
from sinks.webhook import (
    RetryPolicy,
    Secret,
    UnsafeUrlError,
    WebhookConfigError,
    build_payload,
    check_url,
    load_webhook_config,
    new_secret,
)
from sinks.webhook.config import check_addresses, check_url_syntax, resolved_addresses
from sinks.webhook.delivery import classify, parse_retry_after
from sinks.webhook.payload import Names, encode, load_schema
from sinks.webhook.signing import headers, signature

EXAMPLE = Path(__file__).resolve().parents[2] / "alerts" / "endpoints.example.yaml"


def event(rule="adoption_drop", labels=None, kind="firing", values=None, severity="critical") -> dict:
    labels = {"sector": "4730", "unit": "399"} if labels is None else labels
    day = dt.date(2024, 6, 12)
    fp = fingerprint(rule, labels)
    return AlertEvent(
        event_id=f"{fp}-{kind}-{day}", type=kind, fingerprint=fp, rule=rule, labels=labels, severity=severity,
        day=day, started_day=day - dt.timedelta(days=1), values=values or {}, emitted_at=1718236800.5,
    ).as_json()  # fmt: skip


# -- URLs ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allow_private", "allowlist", "ok"),
    [
        ("https://hooks.example.org/x?token=1", False, (), True),
        ("http://hooks.example.org/x", False, (), False),  # http needs the allowlist
        ("http://hooks.example.org/x", False, ("hooks.example.org",), True),
        ("ftp://hooks.example.org/x", False, (), False),
        ("https://user:pw@hooks.example.org/x", False, (), False),
        ("https://127.0.0.1/x", False, (), False),
        ("https://127.0.0.1/x", True, (), True),
        ("http://127.0.0.1:8080/x", True, (), False),  # private allowed, http still needs the allowlist
        ("http://127.0.0.1:8080/x", True, ("127.0.0.1",), True),
        ("https://10.1.2.3/x", False, (), False),
        ("https://192.168.1.1/x", False, (), False),
        ("https://169.254.169.254/latest/meta-data", False, (), False),  # cloud metadata: link-local
        ("https://100.64.0.1/x", False, (), False),  # shared address space
        ("https://[::1]/x", False, (), False),
        ("https://[::ffff:127.0.0.1]/x", False, (), False),
        ("https://[fd00::1]/x", False, (), False),
        ("https://0.0.0.0/x", False, (), False),
        ("https://localhost/x", False, (), False),
        ("https://8.8.8.8/x", False, (), True),
        ("https:///x", False, (), False),
    ],
)
def test_url_syntax_checks(url, allow_private, allowlist, ok):
    if ok:
        check_url_syntax(url, allow_private=allow_private, http_allowlist=allowlist, where="t")
    else:
        with pytest.raises(UnsafeUrlError):
            check_url_syntax(url, allow_private=allow_private, http_allowlist=allowlist, where="t")


def test_a_hostname_resolving_to_a_private_address_is_refused_unless_allowed():
    host = socket.gethostname().lower()  # a name, not an IP literal: only its resolved address tells
    try:
        addresses = resolved_addresses(host, 443)
    except OSError:
        pytest.skip("this machine's hostname does not resolve")
    if all(ipaddress.ip_address(a.split("%")[0]).is_global for a in addresses):
        pytest.skip("this machine's hostname resolves to a public address")
    with pytest.raises(UnsafeUrlError, match="resolves to a loopback or private address"):
        check_url(f"https://{host}/hook", allow_private=False, http_allowlist=())
    check_url(f"https://{host}/hook", allow_private=True, http_allowlist=())
    with pytest.raises(UnsafeUrlError):
        check_addresses(["93.184.216.34", "10.0.0.7"], allow_private=False, host="mixed.example", where="t")
    check_addresses(["93.184.216.34"], allow_private=False, host="public.example", where="t")


# -- secrets and configuration ------------------------------------------------------------------------------------


def test_secret_never_shows_itself():
    text = new_secret()
    secret = Secret(text)
    assert repr(secret) == str(secret) == "Secret('***')"
    assert secret.reveal() == text and len(secret.key) == 32
    assert f"{secret!r} {secret}".count("***") == 2
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    bad = "whsec_" + base64.b64encode(b"short").decode()
    with pytest.raises(WebhookConfigError) as info:
        Secret(bad, "endpoint x")
    assert bad not in str(info.value) and "24–64 bytes" in str(info.value)
    with pytest.raises(WebhookConfigError) as info:
        Secret("whsec_not*base64!", "endpoint x")
    assert "not*base64" not in str(info.value)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "endpoints.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_endpoints_file_with_env_secrets_files_rotation_and_overrides(tmp_path):
    current, previous = new_secret(), new_secret()
    (tmp_path / "chat.secret").write_text(previous + "\n", encoding="utf-8")
    path = write(
        tmp_path,
        """
http_allowlist: [receiver.internal]
endpoints:
  - name: ticketing
    url: https://tickets.example.org/hooks/einvoice?token=abc
    secret_env: TICKET_SECRET
    subscribe: {rules: [adoption_drop], severities: [critical], units: ["399", "*"]}
    timeout_s: 5
    retry: {initial_s: 1, max_s: 60, horizon_s: 600}
  - name: chat-399
    url: http://receiver.internal:8080/hook
    secret_file: chat.secret
""",
    )
    env = {"TICKET_SECRET": f"{current} {previous}", "EINVOICE_WEBHOOK_CHAT_399_ENABLED": "false"}
    config = load_webhook_config(path, env, http_allowlist=["other.internal"], grafana_url="https://g.example/d/x")
    ticketing, chat = config.endpoints
    assert [s.reveal() for s in ticketing.secrets] == [current, previous]
    assert ticketing.secret_source == "env:TICKET_SECRET" and chat.secret_source.startswith("file:")
    assert ticketing.retry == RetryPolicy(initial_s=1, multiplier=2, max_s=60, horizon_s=600, jitter=0.2)
    assert ticketing.timeout_s == 5 and chat.enabled is False
    assert config.http_allowlist == {"receiver.internal", "other.internal"}
    assert config.grafana_url == "https://g.example/d/x"
    shown = repr(config)
    assert current not in shown and previous not in shown and "token=abc" not in shown
    assert ticketing.display_url == "https://tickets.example.org/…"
    assert ticketing.subscribe.matches(event()) and ticketing.subscribe.matches(
        event(labels={"sector": "*", "unit": "*"})
    )
    assert not ticketing.subscribe.matches(event(labels={"sector": "4730", "unit": "380"}))
    assert not ticketing.subscribe.matches(event(severity="warning"))
    # an event without a sector label matches only an empty sector filter
    assert not config.endpoints[0].subscribe.matches(event(rule="dormant_issuer", labels={"unit": "399"}))
    # the URL comes from the environment when set there
    env["EINVOICE_WEBHOOK_TICKETING_URL"] = "https://elsewhere.example.org/h"
    assert load_webhook_config(path, env).endpoints[0].url == "https://elsewhere.example.org/h"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("- {name: a, url: 'https://x.example/h'}", "exactly one of secret_env or secret_file"),
        ("- {name: a, url: 'https://x.example/h', secret_env: MISSING}", "MISSING (the secret) is not set"),
        ("- {name: a, url: 'http://x.example/h', secret_env: S}", "http is allowed only to hosts on the allowlist"),
        ("- {name: a, url: 'https://x.example/h', secret_env: S, colour: red}", "unknown setting(s) colour"),
        ("- {name: A B, url: 'https://x.example/h', secret_env: S}", "name must match"),
        ("- {name: a, url: 'https://x.example/h', secret_env: S, retry: {initial_s: 0}}", "0 < initial_s"),
        ("- {name: a, url: 'https://x.example/h', secret_env: S, subscribe: {types: [fired]}}", "known types"),
        ("- {name: a, url: 'https://x.example/h', secret_env: S}\n"
         "- {name: a, url: 'https://y.example/h', secret_env: S}", "unique"),
        ("- {name: a, url: 'https://x.example/h', secret_env: BAD}", "not a valid whsec_ secret"),
    ],
)  # fmt: skip
def test_configuration_errors_name_the_setting_and_hide_the_secret(tmp_path, body, message):
    env = {"S": new_secret(), "BAD": "whsec_!!!!"}
    with pytest.raises(WebhookConfigError) as info:
        load_webhook_config(write(tmp_path, body), env)
    assert message in str(info.value)
    assert env["S"] not in str(info.value) and "!!!!" not in str(info.value)


def test_the_example_file_loads(tmp_path):
    env = {"EINVOICE_WEBHOOK_SECRET_TICKETING": new_secret()}
    with pytest.raises(WebhookConfigError, match="einvoice_webhook_chat"):  # its chat secret file is not here
        load_webhook_config(EXAMPLE, env)
    (tmp_path / "chat.secret").write_text(new_secret(), encoding="utf-8")
    text = EXAMPLE.read_text(encoding="utf-8").replace("/run/secrets/einvoice_webhook_chat", "chat.secret")
    config = load_webhook_config(write(tmp_path, text), env)
    assert [(e.name, e.enabled) for e in config.endpoints] == [("ticketing", True), ("chat-district-399", False)]
    assert config.endpoints[0].retry == RetryPolicy()


# -- signatures ---------------------------------------------------------------------------------------------------


def test_signature_is_what_standardwebhooks_computes_and_verifies_on_either_secret_during_rotation():
    new, old = new_secret(), new_secret()
    body = encode(build_payload(event(), Names(), "https://g.example/d/x"))
    now = int(time.time())
    sent = headers([Secret(new), Secret(old)], "evt-1", now, body)
    assert sent["webhook-id"] == "evt-1" and sent["webhook-timestamp"] == str(now)
    first, second = sent["webhook-signature"].split(" ")
    assert first == Webhook(new).sign("evt-1", dt.datetime.fromtimestamp(now, dt.UTC), body.decode())
    assert second.startswith("v1,")
    for receiver_secret in (new, old):
        assert Webhook(receiver_secret).verify(body, sent)["event_id"] == event()["event_id"]
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body.replace(b"4730", b"4731"), sent)
    assert signature([Secret(new)], "evt-1", now, body) == first


# -- payload ------------------------------------------------------------------------------------------------------

SAMPLES = [
    event(values={"issuing_share": 0.52, "baseline_share": 0.81, "upper_bound": 0.61, "eligible": 40,
                  "active_today": 21, "adoption_7d": 0.9, "active_7d": 36}),
    event(rule="volume_drop", severity="warning", kind="resolved",
          values={"invoices": 120, "baseline_invoices": 400.5, "p_value": 1e-30, "revenue_vnd": 12_000_000}),
    event(rule="dormant_issuer", labels={"unit": "399"}, kind="repeat", severity="warning",
          values={"count": 2, "sellers": [{"seller_id": "0101234567", "sector": "4730",
                                           "last_invoice_day": "2024-06-10", "usual_daily_invoices": 30.5}]}),
    event(rule="pipeline_silence", labels={"unit": "*"}, values={"longest_silent_hours": 3, "silent_hours": [1, 2, 3]}),
    event(rule="adoption_drop", labels={"sector": "*", "unit": "*"}, values={"issuing_share": math.nan, "narrow": 2}),
    event(rule="adoption_drop", labels={"sector": "9999", "unit": "777"}, values={}),
    event(rule="pipeline_lag", labels={"unit": "*"}, values={"consumer_lag": 80_000, "max_consumer_lag": 50_000}),
]  # fmt: skip


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: f"{s['rule']}-{s['type']}")
def test_payloads_follow_the_schema(sample):
    names = Names({"4730": "Bán lẻ nhiên liệu động cơ"}, {"399": "Huyện Hoằng Hóa"}, "Tỉnh Thanh Hóa")
    payload = build_payload(sample, names, "https://grafana.example.org/d/einvoice-drilldown")
    body = encode(payload)
    assert json.loads(body) == payload  # strict JSON: NaN became null
    validator = jsonschema.Draft202012Validator(load_schema(), format_checker=jsonschema.FormatChecker())
    assert not list(validator.iter_errors(payload)), list(validator.iter_errors(payload))
    assert payload["event_id"] == sample["event_id"] and payload["type"] == sample["type"]
    assert payload["timestamp"] == "2024-06-13T00:00:00.500Z"
    assert payload["links"]["grafana"].startswith("https://grafana.example.org/d/einvoice-drilldown?var-rule=")
    alert = payload["alert"]
    assert alert["starts_at"] == "2024-06-11T00:00:00+07:00"
    assert (alert["ends_at"] is not None) == (sample["type"] == "resolved")


def test_payload_values_and_names():
    names = Names({"4730": "Bán lẻ nhiên liệu động cơ"}, {"399": "Huyện Hoằng Hóa"}, "Tỉnh Thanh Hóa")
    first = build_payload(SAMPLES[0], names, "https://g.example/d/x")["alert"]
    assert first["labels"] == {
        "sector": {"code": "4730", "name": "Bán lẻ nhiên liệu động cơ"},
        "unit": {"code": "399", "name": "Huyện Hoằng Hóa"},
    }
    assert {k: first["values"][k] for k in ("measure", "rate", "baseline", "eligible", "active")} == {
        "measure": "issuing_share", "rate": 0.52, "baseline": 0.81, "eligible": 40, "active": 21,
    }  # fmt: skip
    rollup = build_payload(SAMPLES[4], names, "https://g.example/d/x")["alert"]
    assert rollup["labels"]["unit"]["name"] == "Tỉnh Thanh Hóa" and rollup["labels"]["sector"]["name"]
    assert rollup["values"]["rate"] is None and rollup["values"]["detail"]["issuing_share"] is None
    dormant = build_payload(SAMPLES[2], names, "https://g.example/d/x")["alert"]
    assert dormant["labels"]["sector"] is None and dormant["values"]["rate"] == 2
    assert "Hoằng Hóa".encode() in encode(build_payload(SAMPLES[0], names, "https://g.example/d/x"))


# -- retry arithmetic ---------------------------------------------------------------------------------------------


def test_backoff_grows_is_capped_and_jittered():
    policy = RetryPolicy(initial_s=10, multiplier=2, max_s=60, horizon_s=3600, jitter=0.2)
    assert [policy.delay(n, 0.0) for n in range(1, 6)] == [10, 20, 40, 60, 60]
    assert policy.delay(1, 0.999) == pytest.approx(8.002)
    assert all(8 <= policy.delay(1, i / 10) <= 10 for i in range(10))


def test_retry_after_and_classification():
    now = time.time()
    assert parse_retry_after("7", now) == 7.0
    http_date = format_datetime(dt.datetime.fromtimestamp(int(now) + 30, dt.UTC), usegmt=True)
    assert 28 <= parse_retry_after(http_date, now) <= 31
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None
    assert [classify(s) for s in (200, 204, 301, 400, 404, 408, 410, 429, 500, 503)] == [
        "ok", "ok", "reject", "reject", "reject", "reject", "gone", "retry", "retry", "retry",
    ]  # fmt: skip
