"""The container deployment (docker-compose.yml, deploy/Dockerfile) checked against the code, without Docker.

Every check is a function returning a list of problems, so that ``test_checks_can_fail`` can break a
copy of the compose model and see each check report it.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from base.config import ENVIRONMENT, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
README = ROOT / "README.md"
DOCKERIGNORE = ROOT / ".dockerignore"
APP_VARIABLES = {var for var, _doc in ENVIRONMENT.values()}

Compose = dict[str, Any]


# --- reading the files ---------------------------------------------------------------------------------


def load_compose() -> Compose:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}, $VAR; $$ is a literal $.
_SUBSTITUTION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_]\w*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}|(?P<bare>[A-Za-z_]\w*))"
)


def strings(node: Any) -> Iterator[str]:
    """Every string value of the model (compose interpolates values, not keys)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def substitutions(compose: Compose) -> dict[str, str | None]:
    """Variable -> its operator (None, '-', ':-', '?', ':?', '+', ':+') for every substitution used."""
    found: dict[str, str | None] = {}
    for text in strings(compose):
        for m in _SUBSTITUTION.finditer(text):
            if not m["escaped"]:
                found[m["braced"] or m["bare"]] = m["op"]
    return found


def example_values(compose: Compose) -> dict[str, str]:
    """A user's .env: a value for each variable that has no default (letters and digits, as documented)."""
    return {name: "Example0Secret" for name, op in substitutions(compose).items() if op not in ("-", ":-")}


def interpolate(value: Any, variables: dict[str, str]) -> str:
    def replace(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name, op, arg = m["braced"] or m["bare"], m["op"] or "", m["arg"]
        value = variables.get(name)
        is_set = value is not None and (value != "" or not op.startswith(":"))
        if op.endswith("-"):
            return value if is_set else arg  # type: ignore[return-value]
        if op.endswith("+"):
            return arg if is_set else ""
        if not is_set and op.endswith("?"):
            raise ValueError(f"{name}: {arg}")
        return value or ""

    return _SUBSTITUTION.sub(replace, str(value).lower() if isinstance(value, bool) else str(value))


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, raw (before interpolation); list or mapping form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
            for key, value in env.items()}  # fmt: skip


def resolved_environment(compose: Compose, name: str) -> dict[str, str]:
    variables = example_values(compose)
    return {key: interpolate(value, variables) for key, value in environment(compose["services"][name]).items()}


def app_services(compose: Compose) -> list[str]:
    """Services that run the project's image (built from the repository)."""
    return [name for name, svc in compose["services"].items() if "build" in svc]


def volume_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(type, source, target) of each volume entry, short or long syntax."""
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            yield entry.get("type", "volume"), str(entry.get("source", "")), str(entry.get("target", ""))
            continue
        source, _, rest = entry.partition(":")
        target = rest.split(":", 1)[0]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        yield kind, source, target


def container_ports(service: dict[str, Any]) -> set[int]:
    ports = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).rsplit(":", 1)[-1].split("/", 1)[0]))
    return ports


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def app_dockerfile(compose: Compose) -> Path:
    build = compose["services"]["worker"]["build"]
    context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    return context / dockerfile


def dependencies(service: dict[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in depends.items()}


# --- the checks ----------------------------------------------------------------------------------------


def check_images_and_builds(compose: Compose) -> list[str]:
    problems = []
    for name, svc in compose["services"].items():
        if "build" not in svc and "image" not in svc:
            problems.append(f"{name}: neither image nor build")
        if "build" in svc:
            build = svc["build"]
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not context.is_dir():
                problems.append(f"{name}: build context {context} missing")
            elif not (context / dockerfile).is_file():
                problems.append(f"{name}: dockerfile {context / dockerfile} missing")
        elif "image" in svc:
            image = svc["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if not tag or tag == "latest":
                problems.append(f"{name}: image {image} is not pinned to a version")
    return problems


def check_bind_mounts(compose: Compose) -> list[str]:
    problems = []
    for name, svc in compose["services"].items():
        for kind, source, _target in volume_mounts(svc):
            if kind == "bind" and not source.startswith(("/", "~")) and not (ROOT / source).exists():
                problems.append(f"{name}: bind-mounted {source} does not exist")
    return problems


def check_named_volumes(compose: Compose) -> list[str]:
    declared = set(compose.get("volumes") or {})
    used = {
        source
        for svc in compose["services"].values()
        for kind, source, _target in volume_mounts(svc)
        if kind == "volume" and source
    }
    return [f"volume {v} is used but not declared" for v in sorted(used - declared)] + [
        f"volume {v} is declared but not used" for v in sorted(declared - used)
    ]


def check_app_variables(compose: Compose) -> list[str]:
    """EINVOICE_* anywhere, and everything given to the app's image, must be a variable the app reads."""
    problems = []
    for name, svc in compose["services"].items():
        for var in environment(svc):
            if (var.startswith("EINVOICE_") or name in app_services(compose)) and var not in APP_VARIABLES:
                problems.append(f"{name}: {var} is not in base.config.ENVIRONMENT")
    for var in substitutions(compose):
        if var.startswith("EINVOICE_") and var not in APP_VARIABLES:
            problems.append(f"${{{var}}} is not in base.config.ENVIRONMENT")
    for name in app_services(compose):
        try:
            Settings.from_env(resolved_environment(compose, name))
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    return problems


def check_worker_connections(compose: Compose) -> list[str]:
    """KAFKA_BROKERS names a listener a broker advertises; CLICKHOUSE_URL the user and database created."""
    problems = []
    services = compose["services"]
    env = resolved_environment(compose, "worker")
    for var in ("KAFKA_BROKERS", "CLICKHOUSE_URL"):
        if not env.get(var):
            problems.append(f"worker: {var} is not set")
    for broker in filter(None, env.get("KAFKA_BROKERS", "").split(",")):
        host = broker.strip().rsplit(":", 1)[0]
        advertised = environment(services.get(host, {})).get("KAFKA_ADVERTISED_LISTENERS", "")
        if f"//{broker.strip()}" not in advertised:
            problems.append(f"worker: KAFKA_BROKERS {broker} is not a listener advertised by service {host!r}")
    if env.get("CLICKHOUSE_URL"):
        url = urlsplit(env["CLICKHOUSE_URL"])
        server = services.get(url.hostname or "")
        if server is None:
            problems.append(f"worker: CLICKHOUSE_URL host {url.hostname} is not a service")
        else:
            ch = resolved_environment(compose, url.hostname or "")
            expected = (ch.get("CLICKHOUSE_USER"), ch.get("CLICKHOUSE_PASSWORD"), ch.get("CLICKHOUSE_DB"), 8123)
            actual = (url.username, url.password, url.path.strip("/"), url.port)
            if actual != expected:
                problems.append(f"worker: CLICKHOUSE_URL (user, password, database, port) {actual} != {expected}")
    return problems


def check_worker_dependencies(compose: Compose) -> list[str]:
    expected = {
        "kafka": "service_healthy",
        "clickhouse": "service_healthy",
        "topics": "service_completed_successfully",
    }
    depends = dependencies(compose["services"]["worker"])
    return [
        f"worker: depends_on {name} should be {condition}, is {depends.get(name)}"
        for name, condition in expected.items()
        if depends.get(name) != condition
    ]


def check_worker_web(compose: Compose) -> list[str]:
    """The published port is the one the worker listens on, on an address reachable from outside."""
    worker = compose["services"]["worker"]
    settings = Settings.from_env(resolved_environment(compose, "worker"))
    problems = []
    if "EINVOICE_WEB_PORT" not in environment(worker):
        problems.append("worker: EINVOICE_WEB_PORT is not set")
    if settings.web_port not in container_ports(worker):
        problems.append(f"worker: web port {settings.web_port} not in published ports {container_ports(worker)}")
    if settings.web_host not in ("0.0.0.0", "::"):
        problems.append(f"worker: EINVOICE_WEB_HOST {settings.web_host} is not reachable through a published port")
    return problems


def check_restart_policies(compose: Compose) -> list[str]:
    services = compose["services"]
    problems = []
    if services["worker"].get("restart") not in ("always", "unless-stopped", "on-failure"):
        problems.append("worker: needs a restart policy (it exits with code 70 on unexpected errors)")
    for name in ("topics", "simulator"):
        if str(services[name].get("restart")) != "no":
            problems.append(f"{name}: a one-shot service must have restart: 'no'")
    if services["simulator"].get("profiles") != ["demo"]:
        problems.append("simulator: should only run under the demo profile")
    return problems


def check_pipeline_agreement(compose: Compose) -> list[str]:
    """`topics create` and the processes using the topics must agree on names, partitions and cluster."""
    shared = ("KAFKA_BROKERS", "EINVOICE_TOPIC_PREFIX", "EINVOICE_APP_ID", "EINVOICE_PARTITIONS",
              "EINVOICE_REPLICATION_FACTOR", "EINVOICE_RETENTION_BYTES")  # fmt: skip
    reference = resolved_environment(compose, "topics")
    problems = []
    for name in ("worker", "simulator"):
        env = resolved_environment(compose, name)
        problems += [
            f"{name}: {var}={env.get(var)!r} but topics has {reference.get(var)!r}"
            for var in shared
            if env.get(var) != reference.get(var)
        ]
    return problems


def check_single_broker(compose: Compose) -> list[str]:
    kafka = environment(compose["services"]["kafka"])
    problems = []
    if kafka.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "").lower() != "false":
        problems.append("kafka: topic auto-creation must be off (topics are created with their configs)")
    if not {"broker", "controller"} <= set(kafka.get("KAFKA_PROCESS_ROLES", "").split(",")):
        problems.append("kafka: not in KRaft combined mode")
    for var, value in kafka.items():
        if var.endswith(("_REPLICATION_FACTOR", "_MIN_ISR")) and value != "1":
            problems.append(f"kafka: {var}={value} cannot be met by a single broker")
    for name in app_services(compose):
        if Settings.from_env(resolved_environment(compose, name)).replication_factor != 1:
            problems.append(f"{name}: EINVOICE_REPLICATION_FACTOR must be 1 with a single broker")
    return problems


def check_substitutions_documented(compose: Compose) -> list[str]:
    documented = ENV_EXAMPLE.read_text(encoding="utf-8") if ENV_EXAMPLE.exists() else ""
    readme = README.read_text(encoding="utf-8") if README.exists() else ""
    problems = []
    for var in sorted(substitutions(compose)):
        in_example = re.search(rf"^#?\s*{var}=", documented, re.MULTILINE)
        if not in_example and var not in readme:
            problems.append(f"${{{var}}} is documented neither in .env.example nor in README.md")
    return problems


def check_clickhouse_config(compose: Compose) -> list[str]:
    """Mounted server/users files parse; what they read with from_env is given; `grafana` is read-only."""
    clickhouse = compose["services"]["clickhouse"]
    env = environment(clickhouse)
    problems = []
    users: dict[str, ET.Element] = {}
    profiles: dict[str, ET.Element] = {}
    for kind, source, target in volume_mounts(clickhouse):
        if kind != "bind" or not source.endswith(".xml") or not (ROOT / source).is_file():
            continue
        root = ET.parse(ROOT / source).getroot()
        if not target.startswith("/etc/clickhouse-server/"):
            problems.append(f"clickhouse: {source} mounted outside /etc/clickhouse-server")
        for element in root.iter():
            if "from_env" in element.attrib and element.attrib["from_env"] not in env:
                problems.append(f"clickhouse: {source} reads {element.attrib['from_env']}, which is not set")
        users.update({u.tag: u for u in root.findall("users/*")})
        profiles.update({p.tag: p for p in root.findall("profiles/*")})
    grafana = users.get("grafana")
    if grafana is None:
        return [*problems, "clickhouse: no `grafana` user in the mounted users files"]
    profile = profiles.get(grafana.findtext("profile", ""))
    if profile is None or profile.findtext("readonly") not in ("1", "2"):
        problems.append("clickhouse: the `grafana` user's profile is not readonly")
    grants = [q.text or "" for q in grafana.findall("grants/query")]
    if not grants or any(not re.match(r"GRANT SELECT ON \w+\.\*$", g.strip()) for g in grants):
        problems.append(f"clickhouse: `grafana` grants should be SELECT only, are {grants}")
    return problems


def check_cli_commands(compose: Compose) -> list[str]:
    """Each app service's command (and the image's CMD) is a command line the CLI accepts."""
    import typer  # here, not at the top: a broken CLI import fails this check only

    from cli.main import app as cli_app

    group = typer.main.get_command(cli_app)
    commands = {name: compose["services"][name].get("command") for name in app_services(compose)}
    cmd = [args for keyword, args in dockerfile_instructions(app_dockerfile(compose)) if keyword == "CMD"]
    commands["Dockerfile CMD"] = json.loads(cmd[-1]) if cmd else None
    problems = []
    for name, argv in commands.items():
        if not isinstance(argv, list) or not argv:
            problems.append(f"{name}: command should be a non-empty list, is {argv!r}")
            continue
        # Typer ships its own copy of click: duck-type groups (they have .commands) and errors.
        command: Any = group
        args = list(argv)
        while hasattr(command, "commands") and args and args[0] in command.commands:
            command = command.commands[args.pop(0)]
        if hasattr(command, "commands"):
            problems.append(f"{name}: {argv} is not an einvoice-monitor command")
            continue
        try:
            command.make_context(command.name, args)
        except Exception as exc:
            message = exc.format_message() if hasattr(exc, "format_message") else repr(exc)
            problems.append(f"{name}: {argv}: {message}")
    return problems


def check_grafana(compose: Compose) -> list[str]:
    """Grafana gets the pinned plugin, a data source with the boards' uid as the read-only user, and the boards."""
    from boards.grafana import DATASOURCE_UID, PLUGIN, PLUGIN_VERSION

    grafana = compose["services"].get("grafana")
    if grafana is None:
        return ["no grafana service"]
    env = environment(grafana)
    problems = []
    if f"{PLUGIN} {PLUGIN_VERSION}" not in env.get("GF_INSTALL_PLUGINS", ""):
        problems.append(f"grafana: GF_INSTALL_PLUGINS should install {PLUGIN} {PLUGIN_VERSION}")
    mounts = {target: ROOT / source for kind, source, target in volume_mounts(grafana) if kind == "bind"}
    provisioning = mounts.get("/etc/grafana/provisioning")
    if provisioning is None or not provisioning.is_dir():
        return [*problems, "grafana: no provisioning directory mounted at /etc/grafana/provisioning"]
    sources = [
        ds for path in sorted((provisioning / "datasources").glob("*.yaml"))
        for ds in yaml.safe_load(path.read_text(encoding="utf-8")).get("datasources", [])
    ]  # fmt: skip
    ours = [ds for ds in sources if ds.get("uid") == DATASOURCE_UID]
    if len(ours) != 1 or ours[0].get("type") != PLUGIN:
        problems.append(f"grafana: provisioning should define one {PLUGIN} data source with uid {DATASOURCE_UID}")
    elif ours[0].get("jsonData", {}).get("username") != "grafana":
        problems.append("grafana: the data source should log in as the read-only ClickHouse user `grafana`")
    for path in sorted(provisioning.rglob("*.yaml")):
        for var in re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", path.read_text(encoding="utf-8")):
            if var not in env:
                problems.append(f"grafana: {path.relative_to(ROOT)} reads ${var}, which the service does not set")
    providers = [
        pr for path in sorted((provisioning / "dashboards").glob("*.yaml"))
        for pr in yaml.safe_load(path.read_text(encoding="utf-8")).get("providers", [])
    ]  # fmt: skip
    for provider in providers:
        path = provider.get("options", {}).get("path", "")
        host = next((src / path[len(t) :].lstrip("/") for t, src in mounts.items() if path.startswith(t + "/")), None)
        if host is None or not list(host.glob("*.json")):
            problems.append(f"grafana: provider {provider.get('name')} reads {path}, where no board is mounted")
    if not providers:
        problems.append("grafana: no dashboard provider")
    if "clickhouse" not in dependencies(grafana):
        problems.append("grafana: should start after clickhouse")
    return problems


def check_prometheus(compose: Compose) -> list[str]:
    """Prometheus scrapes the worker's web port with rules.yml and reaches Alertmanager, whose receivers' URL files
    are mounted secrets; both images are the versions `make prometheus` builds and tests."""
    from deploy.prometheus import ALERTMANAGER_CONFIG, PROMETHEUS_CONFIG
    from deploy.prometheus.tools import ALERTMANAGER_VERSION, PROMETHEUS_VERSION

    services = compose["services"]
    prometheus, alertmanager = services.get("prometheus"), services.get("alertmanager")
    if prometheus is None or alertmanager is None:
        return ["no prometheus or no alertmanager service"]
    problems = []
    # the Go module v0.316.0 is Prometheus 3.16.0
    release = "v3." + str(int(PROMETHEUS_VERSION.split(".")[1]) - 300) + "." + PROMETHEUS_VERSION.split(".")[2]
    if prometheus.get("image") != f"prom/prometheus:{release}":
        problems.append(f"prometheus: image should be prom/prometheus:{release} (what the tests run)")
    if alertmanager.get("image") != f"prom/alertmanager:{ALERTMANAGER_VERSION}":
        problems.append(f"alertmanager: image should be prom/alertmanager:{ALERTMANAGER_VERSION}")
    mounts = {target: ROOT / source for kind, source, target in volume_mounts(prometheus) if kind == "bind"}
    config_arg = next((a.split("=", 1)[1] for a in prometheus.get("command", []) if a.startswith("--config.file=")), "")
    config_dir = mounts.get(str(Path(config_arg).parent))
    if config_dir is None or (config_dir / Path(config_arg).name).resolve() != PROMETHEUS_CONFIG.resolve():
        problems.append(f"prometheus: --config.file={config_arg} is not deploy/prometheus/prometheus.yml mounted")
    else:
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
        for rules in config.get("rule_files", []):
            if not (config_dir / rules).is_file():
                problems.append(f"prometheus: rule file {rules} is not in the mounted folder")
        web = resolved_environment(compose, "worker").get("EINVOICE_WEB_PORT", "6066")
        targets = [t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]]
        if f"worker:{web}" not in targets:
            problems.append(f"prometheus: scrapes {targets}, not the worker's web port worker:{web}")
        managers = [
            t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]
        ]
        if managers != ["alertmanager:9093"]:
            problems.append(f"prometheus: sends alerts to {managers}, not the alertmanager service")
    am_config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    secrets = compose.get("secrets") or {}
    for receiver in am_config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            name = Path(webhook.get("url_file", "")).name
            if not webhook.get("url_file", "").startswith("/run/secrets/") or name not in alertmanager.get(
                "secrets", []
            ):
                problems.append(
                    f"alertmanager: receiver {receiver['name']} reads {webhook.get('url_file')}, not a secret"
                )
            elif name not in secrets:
                problems.append(f"secret {name} is not declared")
            elif not re.search(rf"^{secrets[name].get('environment')}=", ENV_EXAMPLE.read_text(encoding="utf-8"), re.M):
                problems.append(f"secret {name}: {secrets[name].get('environment')} is not in .env.example")
    return problems


CHECKS: list[Callable[[Compose], list[str]]] = [
    check_images_and_builds,
    check_bind_mounts,
    check_named_volumes,
    check_app_variables,
    check_worker_connections,
    check_worker_dependencies,
    check_worker_web,
    check_restart_policies,
    check_pipeline_agreement,
    check_single_broker,
    check_substitutions_documented,
    check_clickhouse_config,
    check_cli_commands,
    check_grafana,
    check_prometheus,
]


# --- tests ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Compose:
    return load_compose()


def test_compose_spec_shape(compose: Compose) -> None:
    assert "version" not in compose, "the Compose spec has no `version:` key"
    assert {"kafka", "clickhouse", "topics", "worker", "simulator", "grafana"} <= set(compose["services"])
    assert set(app_services(compose)) >= {"topics", "worker", "simulator"}


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_compose(compose: Compose, check: Callable[[Compose], list[str]]) -> None:
    assert check(compose) == []


def _set(path: str, value: Any) -> Callable[[Compose], None]:
    """A mutation: set (or delete, with value ...) the node at a dotted path."""

    def mutate(model: Compose) -> None:
        *parents, last = path.split(".")
        node = model
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is ...:
            del node[last]
        else:
            node[last] = value

    return mutate


def _rename_bind_source(model: Compose) -> None:
    volumes = model["services"]["clickhouse"]["volumes"]
    index = next(i for i, v in enumerate(volumes) if isinstance(v, str) and v.startswith("./"))
    volumes[index] = volumes[index].replace(".xml:", ".renamed.xml:", 1)


def _move_grafana_boards(model: Compose) -> None:
    volumes = model["services"]["grafana"]["volumes"]
    volumes[:] = [v.replace(":/etc/grafana/dashboards", ":/var/lib/dashboards") for v in volumes]


MUTATIONS = [
    (check_images_and_builds, _set("services.worker.build.dockerfile", "deploy/Dockerfile.renamed")),
    (check_images_and_builds, _set("services.kafka.image", "apache/kafka:latest")),
    (check_bind_mounts, _rename_bind_source),
    (check_named_volumes, _set("volumes.kafka-data", ...)),
    (check_app_variables, _set("services.worker.environment.EINVOICE_PARTITION", "4")),
    (check_app_variables, _set("services.worker.environment.EINVOICE_PARTITIONS", "four")),
    (check_worker_connections, _set("services.worker.environment.KAFKA_BROKERS", "localhost:9092")),
    (
        check_worker_connections,
        _set("services.worker.environment.CLICKHOUSE_URL", "http://einvoice:x@clickhouse:8123/db"),
    ),
    (check_worker_connections, _set("services.worker.environment.CLICKHOUSE_URL", ...)),
    (check_worker_dependencies, _set("services.worker.depends_on.topics.condition", "service_started")),
    (check_worker_dependencies, _set("services.worker.depends_on.clickhouse", ...)),
    (check_worker_web, _set("services.worker.ports", ["127.0.0.1:8080:8080"])),
    (check_worker_web, _set("services.worker.environment.EINVOICE_WEB_HOST", "127.0.0.1")),
    (check_restart_policies, _set("services.worker.restart", ...)),
    (check_pipeline_agreement, _set("services.topics.environment.EINVOICE_PARTITIONS", "8")),
    (check_single_broker, _set("services.kafka.environment.KAFKA_AUTO_CREATE_TOPICS_ENABLE", "true")),
    (check_single_broker, _set("services.kafka.environment.KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", 3)),
    (check_substitutions_documented, _set("services.worker.environment.EINVOICE_APP_ID", "${UNDOCUMENTED_VAR}")),
    (check_clickhouse_config, _set("services.clickhouse.environment.CLICKHOUSE_GRAFANA_PASSWORD", ...)),
    (check_cli_commands, _set("services.topics.command", ["topic", "create"])),
    (check_cli_commands, _set("services.simulator.command", ["simulate", "--no-such-option"])),
    (check_grafana, _set("services.grafana.environment.GF_INSTALL_PLUGINS", "grafana-clickhouse-datasource")),
    (check_grafana, _set("services.grafana.environment.CLICKHOUSE_GRAFANA_PASSWORD", ...)),
    (check_grafana, _move_grafana_boards),
    (check_grafana, _set("services.grafana.depends_on", {})),
    (check_prometheus, _set("services.prometheus.image", "prom/prometheus:v3.1.0")),
    (check_prometheus, _set("services.prometheus.command", ["--config.file=/etc/prometheus/other.yml"])),
    (check_prometheus, _set("services.worker.environment.EINVOICE_WEB_PORT", "7077")),
    (check_prometheus, _set("services.alertmanager.secrets", ["pipeline_pager_url"])),
    (check_prometheus, _set("secrets.pipeline_tickets_url", ...)),
]


@pytest.mark.parametrize(("check", "mutate"), MUTATIONS, ids=lambda x: getattr(x, "__name__", ""))
def test_checks_can_fail(compose: Compose, check: Callable[[Compose], list[str]], mutate: Callable) -> None:
    """Each check notices a broken copy of the model (so none passes vacuously)."""
    broken = copy.deepcopy(compose)
    mutate(broken)
    assert check(broken) != []


def test_dockerfile() -> None:
    compose = load_compose()
    dockerfile = app_dockerfile(compose)
    instructions = dockerfile_instructions(dockerfile)
    last = {keyword: args for keyword, args in instructions}  # the last of each instruction wins

    scripts = pyproject()["project"]["scripts"]
    entrypoint = json.loads(last["ENTRYPOINT"])
    assert entrypoint[0] in scripts, f"ENTRYPOINT {entrypoint} is not a console script of pyproject.toml"

    base_images = [args.split()[0] for keyword, args in instructions if keyword == "FROM"]
    assert base_images[-1].startswith("python:3.11-slim")
    assert "USER" in last and last["USER"].split(":")[0] not in ("root", "0"), "the image must not run as root"

    web_port = Settings.from_env(resolved_environment(compose, "worker")).web_port
    assert str(web_port) in last["EXPOSE"].split()
    assert "/health" in last["HEALTHCHECK"] and "urllib" in last["HEALTHCHECK"]

    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|CLICKHOUSE_URL|://[^/\s]*:[^/\s]*@", re.IGNORECASE)
    for keyword, args in instructions:
        if keyword in ("ENV", "ARG", "LABEL"):
            assert not secretish.search(args), f"{keyword} {args} looks like a baked-in secret"


def _dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per line, with Go filepath.Match-like semantics plus `**`."""
    patterns = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        body = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(body):
            if body.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif body.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif body[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif body[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif body[i] == "[":
                end = body.index("]", i)
                regex, i = regex + body[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(body[i]), i + 1
        patterns.append((negated, re.compile(regex + r"\Z")))
    return patterns


def dockerignored(relative: str) -> bool:
    """Whether the build context leaves this path out (it, or a parent directory, matches last)."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, pattern in _dockerignore_patterns():
        if any(pattern.match(c) for c in candidates):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_build_inputs_and_drops_secrets() -> None:
    project = pyproject()
    setuptools = project["tool"]["setuptools"]
    needed = ["pyproject.toml", *(pkg.replace(".", "/") + "/__init__.py" for pkg in setuptools["packages"])]
    for pkg, globs in setuptools.get("package-data", {}).items():
        for pattern in globs:
            needed += [str(p.relative_to(ROOT)) for p in (ROOT / pkg.replace(".", "/")).glob(pattern)]
    readme = project["project"].get("readme")
    if isinstance(readme, str) and (ROOT / readme).exists():
        needed.append(readme)
    assert len(needed) > len(setuptools["packages"]), "package data not found: the check would be vacuous"
    assert [path for path in needed if dockerignored(path)] == []
    kept_out = (".env", ".git", ".venv", "tests/project/test_compose.py")
    assert [path for path in kept_out if not dockerignored(path)] == []
