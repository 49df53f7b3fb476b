"""No secret in any log line: the formatter's redaction, the configured logger, and the real worker.

Secrets here: the password of ``CLICKHOUSE_URL`` (and any ``scheme://user:pass@`` in a line),
secret-looking environment variables (``CLICKHOUSE_PASSWORD``, ``*_SECRET*``, ``*TOKEN*``),
webhook signing secrets (from a variable or a file, each form a receiver might paste) and the
token in a webhook URL's query.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from base import logs
from deploy.kafka import free_port
from deploy.worker_process import WorkerProcess
from sinks.webhook import Secret, new_secret
from tests.support import PublishedFeed, wait_consumed

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "S3cr3t-pw0rd!"
URL_PASSWORD = "p@ss/w0rd:x"  # needs percent-encoding inside a URL
ENCODED_URL_PASSWORD = "p%40ss%2Fw0rd%3Ax"


def secret_forms(text: str) -> set[str]:
    """A webhook secret as it may appear: whole, without prefix, without padding, the key in hex."""
    body = text.removeprefix("whsec_")
    return {text, body, body.rstrip("="), base64.b64decode(body).hex()}


def leaks(text: str, secrets: set[str]) -> list[str]:
    return sorted(s for s in secrets if s in text)


def formatted(msg: str, *args: object, exc: BaseException | None = None, **extra: object) -> str:
    record = logging.LogRecord("test", logging.ERROR, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    if exc is not None:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    return logs.LogfmtFormatter().format(record)


def test_urls_lose_their_credentials_wherever_they_are_in_a_line():
    dsn = f"https://einvoice:{ENCODED_URL_PASSWORD}@clickhouse.internal:8443/einvoice"
    try:
        raise ConnectionError(f"cannot reach {dsn}")
    except ConnectionError as error:
        line = formatted("connecting to %s", dsn, exc=error, dsn=dsn, other="kafka://admin:hunter22@broker:9092")
    assert ENCODED_URL_PASSWORD not in line and "hunter22" not in line and "einvoice:" not in line
    assert "https://***@clickhouse.internal:8443/einvoice" in line and "kafka://***@broker:9092" in line
    assert "ConnectionError" in line  # the traceback is kept, redacted
    assert logs.redact_line("see https://example.org/a@b and user@example.org") == (
        "see https://example.org/a@b and user@example.org"
    )  # a path with @ and an e-mail address are not credentials


def test_secret_environment_variables_are_redacted_and_nothing_else():
    webhook = new_secret()
    logs.register_environment_secrets({
        "CLICKHOUSE_PASSWORD": PASSWORD, "EINVOICE_WEBHOOK_SECRET_TICKETING": f"{webhook} {new_secret()}",
        "CLICKHOUSE_URL": f"https://einvoice:{ENCODED_URL_PASSWORD}@h:8443/db", "GITHUB_TOKEN": "ghp_abcdef123456",
        "HOME": "/root", "EINVOICE_PARTITIONS": "4", "SHORT_SECRET": "abc",
    })  # fmt: skip
    line = formatted(f"pw={PASSWORD} url-pw={URL_PASSWORD} hook={webhook} gh=ghp_abcdef123456 home=/root n=4 abc")
    assert leaks(line, {PASSWORD, URL_PASSWORD, ENCODED_URL_PASSWORD, webhook, "ghp_abcdef123456"}) == []
    assert "home=/root" in line and "n=4" in line and " abc" in line  # ordinary values and too-short ones stay


def test_webhook_secrets_register_themselves_when_loaded():
    text = new_secret()
    Secret(text, "test")
    line = formatted("careless: %s / %s", text, text.removeprefix("whsec_").rstrip("="))
    assert leaks(line, secret_forms(text)) == []


def test_the_configured_logger_redacts_in_a_fresh_process():
    """What the worker and the dispatcher install (base.logs.configure), with the secrets in the environment."""
    webhook = new_secret()
    code = (
        "import logging, os\n"
        "from base import logs\n"
        "logs.configure('DEBUG')\n"
        "log = logging.getLogger('einvoice.test')\n"
        "url = os.environ['CLICKHOUSE_URL']\n"
        "log.info('connecting', extra={'dsn': url, 'password': os.environ['CLICKHOUSE_PASSWORD']})\n"
        "log.warning('hook secret %s', os.environ['EINVOICE_WEBHOOK_SECRET_CHAT'])\n"
        "try:\n"
        "    raise RuntimeError('failed: ' + url)\n"
        "except RuntimeError:\n"
        "    log.exception('giving up')\n"
    )
    env = {
        **os.environ, "CLICKHOUSE_URL": f"http://einvoice:{ENCODED_URL_PASSWORD}@127.0.0.1:1/db",
        "CLICKHOUSE_PASSWORD": PASSWORD, "EINVOICE_WEBHOOK_SECRET_CHAT": webhook,
    }  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "giving up" in output and "RuntimeError" in output and "http://***@127.0.0.1:1/db" in output
    assert leaks(output, {PASSWORD, ENCODED_URL_PASSWORD, URL_PASSWORD} | secret_forms(webhook)) == []


def test_the_worker_logs_no_secret(settings, tmp_path):
    """A worker with two webhook endpoints (secrets from a variable and a file, a token in a URL) and a
    ClickHouse password in its environment ingests a feed with malformed records: its log holds none of them.
    Then a worker whose CLICKHOUSE_URL carries a password and whose server is down fails to start, loudly,
    and its log does not hold the password either."""
    env_secret, file_secret, token = new_secret(), new_secret(), "tok_9f8e7d6c5b4a3f2e1d0c"
    (tmp_path / "chat.secret").write_text(file_secret + "\n", encoding="utf-8")
    port = free_port()
    (tmp_path / "endpoints.yaml").write_text(
        f"""
http_allowlist: [127.0.0.1]
endpoints:
  - {{name: ticketing, url: "http://127.0.0.1:{port}/hooks?token={token}", secret_env: HOOK_KEY_TICKETING,
      allow_private: true}}
  - {{name: chat, url: "http://127.0.0.1:{port}/chat/{token}", secret_file: chat.secret, allow_private: true}}
""",
        encoding="utf-8",
    )
    secrets = {PASSWORD, token} | secret_forms(env_secret) | secret_forms(file_secret)
    env = {
        **settings.to_env(), "EINVOICE_WEBHOOKS_FILE": str(tmp_path / "endpoints.yaml"),
        "HOOK_KEY_TICKETING": env_secret, "CLICKHOUSE_PASSWORD": PASSWORD,
    }  # fmt: skip
    PublishedFeed(settings, sellers=100, invoices=1500, seed=23)
    worker = WorkerProcess(env, tmp_path / "worker.log", settings.web_port).start()
    try:
        worker.wait_healthy()
        wait_consumed(settings, worker, timeout=180)
        webhooks = worker.get_json("/webhooks")
    finally:
        worker.stop()
    assert webhooks and {e["endpoint"] for e in webhooks["endpoints"]} == {"ticketing", "chat"}  # the secrets were used
    log = worker.log_path.read_text(errors="replace")
    assert "clickhouse ready" in log and "webhook endpoint consuming" in log
    assert leaks(log, secrets) == []

    down = {**env, "CLICKHOUSE_URL": f"http://einvoice:{ENCODED_URL_PASSWORD}@127.0.0.1:{free_port()}/einvoice",
            "EINVOICE_WEB_PORT": str(free_port())}  # fmt: skip
    failing = WorkerProcess(down, tmp_path / "failing.log", int(down["EINVOICE_WEB_PORT"])).start()
    try:
        deadline = time.monotonic() + 90
        while failing.running and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        failing.stop()
    log = failing.log_path.read_text(errors="replace")
    assert "OperationalError" in log  # it said why it could not start
    assert leaks(log, secrets | {ENCODED_URL_PASSWORD, URL_PASSWORD}) == []
