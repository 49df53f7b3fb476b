"""Launch real Apache Kafka nodes (KRaft, each a combined broker+controller) on loopback.

Kafka is fetched from Maven Central with Maven (the only way to get it on our machines) and run with the
system ``java``; no Docker, no downloads of tarballs. Each ``LocalBroker`` owns one ``data_dir`` that holds
its ``server.properties``, the KRaft log dirs, ``broker.log`` and a ``state.json`` describing the running
process, so several brokers with different data dirs can run side by side and survive the Python process
that started them. A ``LocalCluster`` is N such nodes (``node-1`` … under its own ``data_dir``) that form
one controller quorum, with the replication a cluster of that size should have (see :func:`replication`).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from base.config import CACHE_DIR_VARIABLE

KAFKA_VERSION = "4.1.1"

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
_POM = _HERE / "pom.xml"
_LOG4J2_CONFIG = _HERE / "log4j2.properties"
_MARKER = ".installed.json"
_STATE = "state.json"
_BROKER_LOG = "broker.log"
_PROPERTIES = "server.properties"
_LOG_DIR = "kraft-logs"
_HEAP_OPTS = ("-Xms256m", "-Xmx1g")
_JVM_OPTS = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true")
_MVN_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class BrokerStatus:
    """Snapshot of one data dir's broker (or cluster); ``pid``/``bootstrap`` are None unless it is running.

    For a cluster, ``running`` says every node runs, ``bootstrap`` lists the nodes that do, and ``nodes``
    holds each node's own status.
    """

    running: bool
    pid: int | None
    bootstrap: str | None
    data_dir: Path
    nodes: tuple[BrokerStatus, ...] = ()


@dataclass(frozen=True)
class Replication:
    """What a cluster of ``nodes`` brokers sets as its defaults: topics replicated to 3, acks=all needing 2.

    One node: 1 and 1 (nothing else is possible). Two: 2 and 1, so one node down still takes writes.
    Three or more: RF 3 and ``min.insync.replicas`` 2, so one node down loses nothing and stops nothing.
    """

    factor: int
    min_insync: int


def replication(nodes: int) -> Replication:
    factor = min(3, nodes)
    return Replication(factor, max(1, factor - 1))


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (the OS picks it; never assume a fixed one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def default_cache_dir() -> Path:
    """Shared jar cache: ``$EINVOICE_CACHE_DIR`` or ``${XDG_CACHE_HOME:-~/.cache}/einvoice-monitor``."""
    env = os.environ.get(CACHE_DIR_VARIABLE)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "einvoice-monitor"


def _port_free(port: int) -> bool:
    """Whether the broker could listen on ``port``.

    With SO_REUSEADDR, as the JVM binds its listeners: right after a stop, the connections the broker
    closed sit in TIME_WAIT on its port, which blocks a plain bind but not the broker's; without it a
    restart moved to another port whenever clients had been connected, and they never found it again.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_answers(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no {path.name} yet)"
    return "\n".join(text.splitlines()[-lines:]) or f"({path.name} is empty)"


def _java_string_hash(text: str) -> int:
    """``String.hashCode()``: Kafka maps a group to an offsets partition with it."""
    data = text.encode("utf-16-be")  # Java hashes UTF-16 code units
    value = 0
    for i in range(0, len(data), 2):
        value = (31 * value + int.from_bytes(data[i : i + 2], "big")) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def offsets_partition(group: str, partitions: int) -> int:
    """The ``__consumer_offsets`` partition of ``group``: its leader is the group's coordinator (Kafka's rule)."""
    code = _java_string_hash(group)
    return (0 if code == -(1 << 31) else abs(code)) % partitions


def _probe_groups(partitions: int) -> list[str]:
    """Group ids that together map to every ``__consumer_offsets`` partition (Kafka's group partitioner)."""
    found: dict[int, str] = {}
    index = 0
    while len(found) < partitions:
        group = f"einvoice-local-broker-probe-{index}"
        found.setdefault(offsets_partition(group, partitions), group)
        index += 1
    return list(found.values())


def _check_offsets_loaded(admin: Any) -> None:
    """Raise (CoordinatorLoadInProgressError) until every ``__consumer_offsets`` partition is loaded.

    Right after a restart the coordinator answers OffsetFetch with a top-level COORDINATOR_LOAD_IN_PROGRESS;
    aiokafka (0.14) ignores that top-level error and treats the group as having no committed offsets, so a
    consumer starting then silently falls back to ``auto_offset_reset``. Waiting here closes that window.
    kafka-python raises on that error, so one batched OffsetFetch over probe groups checks all partitions.
    """
    described = admin.describe_topics(["__consumer_offsets"])
    if not described or described[0].get("error_code") != 0:
        return  # fresh cluster: the topic is created on first group use, nothing to load
    partitions = len(described[0].get("partitions") or [])
    if partitions:
        admin.list_group_offsets(_probe_groups(partitions))


def _random_cluster_id() -> str:
    """A UUID as unpadded url-safe base64, like ``kafka-storage random-uuid`` prints.

    Never one starting with ``-`` (Kafka's ``Uuid.randomUuid`` draws again too): the storage tool's
    argument parser reads ``--cluster-id -x…`` as a missing value, and formatting failed once in 64.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Inter-process lock so concurrent callers (pytest-xdist, two shells) don't race on one dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise RuntimeError(
            "Java not found: install a JDK/JRE 17+ (apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    return found


class LocalBroker:
    """One Kafka broker+controller process bound to 127.0.0.1, owned by ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        cache_dir: Path | None = None,
        kafka_version: str = KAFKA_VERSION,
        *,
        node_id: int = 1,
        voters: str | None = None,
        cluster_id: str | None = None,
        nodes: int = 1,
    ) -> None:
        """A node on its own (the defaults), or node ``node_id`` of a cluster of ``nodes``.

        A cluster's node is given the quorum's ``voters`` (``id@host:port,…``: fixed ports, as every
        node's config names them) and the ``cluster_id`` all nodes are formatted with.
        """
        self.data_dir = Path(data_dir).resolve()
        self.cache_dir = Path(cache_dir).resolve() if cache_dir is not None else default_cache_dir()
        self.kafka_version = kafka_version
        self.node_id = node_id
        self.voters = voters
        self.cluster_id = cluster_id
        self.replication = replication(nodes)
        self._proc: subprocess.Popen[bytes] | None = None  # kept only to reap our own child

    # ----------------------------------------------------------------- paths
    @property
    def libs_dir(self) -> Path:
        return self.cache_dir / f"kafka-{self.kafka_version}" / "libs"

    @property
    def log_path(self) -> Path:
        return self.data_dir / _BROKER_LOG

    @property
    def properties_path(self) -> Path:
        return self.data_dir / _PROPERTIES

    @property
    def _state_path(self) -> Path:
        return self.data_dir / _STATE

    @property
    def _kraft_dir(self) -> Path:
        return self.data_dir / _LOG_DIR

    # --------------------------------------------------------------- install
    def ensure_installed(self) -> Path:
        """Fetch the broker classpath once with Maven; later calls only check a marker file."""
        libs = self.libs_dir
        marker = libs.parent / _MARKER
        if self._installed(marker):
            return libs
        with _file_lock(libs.parent.with_name(libs.parent.name + ".lock")):
            if self._installed(marker):
                return libs
            mvn = shutil.which("mvn")
            if not mvn:
                raise RuntimeError("Maven not found: install maven (apt-get install maven) and retry")
            tmp = libs.parent / f"libs.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            cmd = [
                mvn,
                "-q",
                "-B",
                "-Dstyle.color=never",
                "-f",
                str(_POM),
                f"-Dkafka.version={self.kafka_version}",
                f"-DoutputDirectory={tmp}",
                "-DincludeScope=runtime",
                "dependency:copy-dependencies",
            ]
            log.info("kafka fetch start version=%s dest=%s", self.kafka_version, libs)
            started = time.monotonic()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_MVN_TIMEOUT_S)
            except subprocess.TimeoutExpired as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise RuntimeError(
                    f"Maven did not finish fetching Kafka {self.kafka_version} in {_MVN_TIMEOUT_S:.0f}s; "
                    "check that Maven Central is reachable and retry"
                ) from exc
            jar = tmp / f"kafka_2.13-{self.kafka_version}.jar"
            if proc.returncode != 0 or not jar.exists():
                shutil.rmtree(tmp, ignore_errors=True)
                output = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
                raise RuntimeError(
                    f"Maven could not fetch org.apache.kafka:kafka_2.13:{self.kafka_version} (exit "
                    f"{proc.returncode}); check the version exists and Maven Central is reachable "
                    f"(try: {' '.join(cmd)}). Output tail:\n{output}"
                )
            shutil.rmtree(libs, ignore_errors=True)
            tmp.rename(libs)
            jars = sorted(p.name for p in libs.glob("*.jar"))
            marker.write_text(json.dumps({"kafka_version": self.kafka_version, "jars": jars}, indent=1))
            log.info(
                "kafka fetch done version=%s jars=%d seconds=%.1f",
                self.kafka_version,
                len(jars),
                time.monotonic() - started,
            )
            return libs

    def _installed(self, marker: Path) -> bool:
        return marker.exists() and (self.libs_dir / f"kafka_2.13-{self.kafka_version}.jar").exists()

    # ----------------------------------------------------------------- state
    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self._state_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        tmp.replace(self._state_path)

    def _live_process(self, state: dict[str, Any]) -> psutil.Process | None:
        """The broker process from ``state`` if it is alive and really is our java (guards pid reuse)."""
        pid = state.get("pid")
        if not isinstance(pid, int):
            return None
        if self._proc is not None and self._proc.pid == pid and self._proc.poll() is not None:
            return None  # our own child exited (poll() reaped it)
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            cmdline = proc.cmdline()
            created = proc.create_time()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        if "kafka.Kafka" not in cmdline or str(self.properties_path) not in cmdline:
            return None
        if abs(created - float(state.get("create_time", created))) > 1.0:
            return None
        return proc

    def status(self) -> BrokerStatus:
        """Running iff the recorded pid is alive and is this data dir's ``kafka.Kafka`` java process."""
        state = self._read_state()
        proc = self._live_process(state)
        if proc is None:
            return BrokerStatus(running=False, pid=None, bootstrap=None, data_dir=self.data_dir)
        bootstrap = state.get("bootstrap")
        return BrokerStatus(running=True, pid=proc.pid, bootstrap=bootstrap, data_dir=self.data_dir)

    # ------------------------------------------------------------- lifecycle
    def start(self, port: int | None = None, timeout: float = 90.0, controller_port: int | None = None) -> str:
        """Start (or find already running) the broker and return its bootstrap ``127.0.0.1:PORT``."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.data_dir / ".lock"):
            state = self._read_state()
            proc = self._live_process(state)
            if proc is not None:
                bootstrap = str(state["bootstrap"])
                self._wait_ready(bootstrap, proc, time.monotonic() + timeout, timeout)
                log.info("kafka already running pid=%d bootstrap=%s", proc.pid, bootstrap)
                return bootstrap

            libs = self.ensure_installed()
            java = _find_java()
            broker_port = self._pick_port(port, state.get("port"), avoid=set())
            controller_port = self._pick_port(controller_port, state.get("controller_port"), avoid={broker_port})
            bootstrap = f"127.0.0.1:{broker_port}"
            self._write_properties(broker_port, controller_port)
            cluster_id = self._format_storage(java, libs, self.cluster_id or state.get("cluster_id"))

            if self.log_path.exists():  # keep exactly one previous run's log for diagnosis
                self.log_path.replace(self.log_path.with_name(_BROKER_LOG + ".1"))
            cmd = [
                java,
                *_HEAP_OPTS,
                *_JVM_OPTS,
                f"-Dlog4j2.configurationFile={_LOG4J2_CONFIG}",
                "-cp",
                str(libs / "*"),
                "kafka.Kafka",
                str(self.properties_path),
            ]
            started = time.monotonic()
            with self.log_path.open("ab") as out:
                self._proc = subprocess.Popen(
                    cmd,
                    cwd=self.data_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            proc = psutil.Process(self._proc.pid)
            self._write_state(
                {
                    "pid": proc.pid,
                    "create_time": proc.create_time(),
                    "port": broker_port,
                    "controller_port": controller_port,
                    "bootstrap": bootstrap,
                    "cluster_id": cluster_id,
                    "kafka_version": self.kafka_version,
                }
            )
            log.info(
                "kafka starting pid=%d bootstrap=%s controller_port=%d data_dir=%s",
                proc.pid,
                bootstrap,
                controller_port,
                self.data_dir,
            )
            try:
                self._wait_ready(bootstrap, proc, started + timeout, timeout)
            except BaseException:
                self._terminate(proc, 10.0)
                self._clear_pid()
                raise
            log.info("kafka ready bootstrap=%s seconds=%.1f", bootstrap, time.monotonic() - started)
            return bootstrap

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM for a controlled shutdown, SIGKILL after ``timeout``; True if a broker was running."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.data_dir / ".lock"):
            proc = self._live_process(self._read_state())
            if proc is None:
                self._clear_pid()
                return False
            started = time.monotonic()
            self._terminate(proc, timeout)
            self._clear_pid()
            log.info("kafka stopped pid=%d seconds=%.1f", proc.pid, time.monotonic() - started)
            return True

    def kill(self) -> bool:
        """SIGKILL, as a crashed machine stops: no controlled shutdown, no leadership handed over."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.data_dir / ".lock"):
            proc = self._live_process(self._read_state())
            if proc is None:
                self._clear_pid()
                return False
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
                proc.wait(timeout=10)
            if self._proc is not None and self._proc.pid == proc.pid:
                with contextlib.suppress(Exception):
                    self._proc.wait(timeout=1)
                self._proc = None
            self._clear_pid()
            log.info("kafka killed pid=%d node_id=%d", proc.pid, self.node_id)
            return True

    # --------------------------------------------------------------- helpers
    def _pick_port(self, requested: int | None, previous: object, avoid: set[int]) -> int:
        """Explicit port, else the previous run's port if still free (stable bootstrap), else a fresh one."""
        if requested is not None:
            if not _port_free(requested):
                raise RuntimeError(f"port {requested} on 127.0.0.1 is in use: pass another port or None")
            return requested
        if isinstance(previous, int) and previous not in avoid and _port_free(previous):
            return previous
        while True:
            port = free_port()
            if port not in avoid:
                return port

    def _write_properties(self, port: int, controller_port: int) -> None:
        # Static quorum (controller.quorum.voters): the voter endpoint lives in config, not in the metadata
        # log, so a restart on different ports just works. `--standalone` (dynamic quorum) would pin it.
        factor, min_insync = str(self.replication.factor), str(self.replication.min_insync)
        props = {
            "node.id": str(self.node_id),
            "process.roles": "broker,controller",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.quorum.voters": self.voters or f"{self.node_id}@127.0.0.1:{controller_port}",
            "log.dirs": str(self._kraft_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            # the defaults a topic created without its own settings gets (ours: kafka_io/topics.py)
            "default.replication.factor": factor,
            "min.insync.replicas": min_insync,
            "offsets.topic.replication.factor": factor,
            "transaction.state.log.replication.factor": factor,
            "transaction.state.log.min.isr": min_insync,
            "share.coordinator.state.topic.replication.factor": factor,
            "share.coordinator.state.topic.min.isr": min_insync,
            "group.initial.rebalance.delay.ms": "0",
        }
        text = "# Written by deploy.kafka.broker.LocalBroker on every start; edits are overwritten.\n"
        text += "".join(f"{key}={value}\n" for key, value in props.items())
        self.properties_path.write_text(text)

    def _format_storage(self, java: str, libs: Path, cluster_id: object) -> str:
        """Format the KRaft log dir once; an existing ``meta.properties`` means the cluster already exists."""
        meta = self._kraft_dir / "meta.properties"
        if meta.exists():
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
            return str(cluster_id)
        new_id = cluster_id if isinstance(cluster_id, str) and cluster_id else _random_cluster_id()
        cmd = [
            java,
            f"-Dlog4j2.configurationFile={_LOG4J2_CONFIG}",
            "-cp",
            str(libs / "*"),
            "kafka.tools.StorageTool",
            "format",
            "--config",
            str(self.properties_path),
            "--cluster-id",
            new_id,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(
                f"formatting Kafka storage in {self._kraft_dir} failed (exit {proc.returncode}); delete that "
                f"directory if it is half-written and retry. Output:\n{(proc.stdout + proc.stderr)[-3000:]}"
            )
        log.info("kafka storage formatted cluster_id=%s dir=%s", new_id, self._kraft_dir)
        return new_id

    def _wait_ready(self, bootstrap: str, proc: psutil.Process, deadline: float, timeout: float) -> None:
        """Block until the broker serves metadata and its group coordinator has loaded committed offsets."""
        from kafka import KafkaAdminClient  # lazy: only needed while waiting

        port = int(bootstrap.rsplit(":", 1)[1])
        last_error = "port not open yet"
        while time.monotonic() < deadline:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                code = self._proc.poll() if self._proc is not None and self._proc.pid == proc.pid else None
                raise RuntimeError(
                    f"Kafka broker exited during startup (exit code {code}); see {self.log_path}. "
                    f"Log tail:\n{_tail(self.log_path)}"
                )
            # Connect the admin client only once the port is open: kafka-python backs off for seconds
            # after a refused connection, which would add that delay to every start.
            if _port_answers(port, timeout=0.5):
                admin = None
                try:
                    admin = KafkaAdminClient(
                        bootstrap_servers=bootstrap,
                        request_timeout_ms=5000,
                        reconnect_backoff_max_ms=500,
                        client_id="einvoice-local-broker-probe",
                    )
                    if admin.describe_cluster().get("brokers"):
                        _check_offsets_loaded(admin)
                        return
                    last_error = "no broker registered yet"
                except Exception as exc:  # any client error just means "not ready yet"
                    last_error = f"{type(exc).__name__}: {exc}"
                finally:
                    if admin is not None:
                        admin.close()
                log.debug("kafka not ready bootstrap=%s reason=%s", bootstrap, last_error)
            time.sleep(0.2)
        raise RuntimeError(
            f"Kafka broker did not start in {timeout:.0f}s (last probe: {last_error}); check {self.log_path} "
            f"and free memory/ports, then retry with a longer timeout. Log tail:\n{_tail(self.log_path)}"
        )

    def _terminate(self, proc: psutil.Process, timeout: float) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)  # reaps it too when it is our child
            except psutil.TimeoutExpired:
                log.warning("kafka did not stop in %.0fs, killing pid=%d", timeout, proc.pid)
                proc.kill()
                proc.wait(timeout=10)
        if self._proc is not None and self._proc.pid == proc.pid:
            with contextlib.suppress(Exception):
                self._proc.wait(timeout=1)
            self._proc = None

    def _clear_pid(self) -> None:
        state = self._read_state()
        if state.get("pid") is not None:
            state["pid"] = None
            state.pop("create_time", None)
            self._write_state(state)


_CLUSTER = "cluster.json"


class LocalCluster:
    """``nodes`` Kafka nodes on loopback forming one KRaft quorum, each in ``data_dir/node-<id>``.

    Every node is broker and controller (static voters, like :class:`LocalBroker` alone), so killing
    one kills a broker and a voter, as losing a machine of a small cluster does. The ports are chosen
    once and kept in ``cluster.json``: every node's config names every voter, so a node restarts where
    the others expect it. ``nodes=1`` is a one-node cluster; the CLI keeps :class:`LocalBroker` for that.
    """

    def __init__(
        self, data_dir: Path, nodes: int = 3, cache_dir: Path | None = None, kafka_version: str = KAFKA_VERSION
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.cache_dir = cache_dir
        self.kafka_version = kafka_version
        spec = self._read_spec()
        if spec and spec["nodes"] != nodes:
            raise RuntimeError(
                f"{self.data_dir} holds a cluster of {spec['nodes']} nodes, not {nodes}: start it with "
                f"--nodes {spec['nodes']}, or stop it and delete that directory for a new one"
            )
        self.size = nodes
        self._spec = spec or self._new_spec(nodes)
        voters = ",".join(f"{i}@127.0.0.1:{c}" for i, (_, c) in enumerate(self._spec["ports"], start=1))
        self.nodes = [
            LocalBroker(
                self.data_dir / f"node-{i}",
                cache_dir,
                kafka_version,
                node_id=i,
                voters=voters,
                cluster_id=self._spec["cluster_id"],
                nodes=nodes,
            )
            for i in range(1, nodes + 1)
        ]

    @staticmethod
    def exists(data_dir: Path) -> bool:
        """Whether ``data_dir`` holds a cluster (rather than one node, or nothing yet)."""
        return (Path(data_dir) / _CLUSTER).exists()

    @classmethod
    def open(cls, data_dir: Path, cache_dir: Path | None = None) -> LocalCluster:
        """The cluster ``data_dir`` holds, at the size it was made."""
        spec = json.loads((Path(data_dir) / _CLUSTER).read_text())
        return cls(data_dir, int(spec["nodes"]), cache_dir)

    def _read_spec(self) -> dict[str, Any] | None:
        try:
            spec = json.loads((self.data_dir / _CLUSTER).read_text())
        except (OSError, ValueError):
            return None
        return spec if isinstance(spec, dict) else None

    def _new_spec(self, nodes: int) -> dict[str, Any]:
        ports: list[int] = []
        while len(ports) < 2 * nodes:
            port = free_port()
            if port not in ports:
                ports.append(port)
        spec = {
            "nodes": nodes,
            "cluster_id": _random_cluster_id(),
            "ports": [ports[i : i + 2] for i in range(0, 2 * nodes, 2)],
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / _CLUSTER).write_text(json.dumps(spec, indent=1))
        return spec

    def node(self, node_id: int) -> LocalBroker:
        return self.nodes[node_id - 1]

    @property
    def bootstrap(self) -> str:
        """Every node's client address, as a client should be given them (any one that answers will do)."""
        return ",".join(f"127.0.0.1:{port}" for port, _ in self._spec["ports"])

    def ensure_installed(self) -> Path:
        return self.nodes[0].ensure_installed()

    def start(self, timeout: float = 120.0) -> str:
        """Start every node that is not running, together (a node waits for a quorum), and return the bootstrap."""
        self.ensure_installed()

        def start(node: LocalBroker) -> None:
            port, controller_port = self._spec["ports"][node.node_id - 1]
            node.start(port=port, controller_port=controller_port, timeout=timeout)

        self._on_every_node(start)
        return self.bootstrap

    def _on_every_node(self, action: Callable[[LocalBroker], object]) -> None:
        """``action`` on every node at once; the first error is raised once every node had its turn.

        Together, not in turn: a node starts only once a quorum of voters runs, and a node stopped after
        the quorum is gone waits for it in its controlled shutdown until it is killed.
        """
        errors: list[BaseException] = []

        def run(node: LocalBroker) -> None:
            try:
                action(node)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n,), name=f"kafka-node-{n.node_id}") for n in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def start_node(self, node_id: int, timeout: float = 120.0) -> str:
        """Start one node again (after :meth:`kill_node` or :meth:`stop_node`), on its ports."""
        port, controller_port = self._spec["ports"][node_id - 1]
        return self.node(node_id).start(port=port, controller_port=controller_port, timeout=timeout)

    def under_replicated(self) -> list[str]:
        """``topic:partition`` of every partition whose in-sync replicas are fewer than its replicas."""
        from kafka import KafkaAdminClient  # lazy, as in LocalBroker._wait_ready

        admin = KafkaAdminClient(bootstrap_servers=self.status().bootstrap or self.bootstrap, request_timeout_ms=5000)
        try:
            return [
                f"{topic['name']}:{p['partition_index']}"
                for topic in admin.describe_topics()
                for p in topic.get("partitions") or ()
                if set(p.get("isr_nodes") or ()) != set(p.get("replica_nodes") or ())
            ]
        finally:
            admin.close()

    def wait_in_sync(self, timeout: float = 120.0) -> None:
        """Block until every partition has all its replicas in sync, as a rolling restart waits between nodes.

        A node restarted after a kill serves clients before it has caught up: taking another node down
        then would leave partitions below ``min.insync.replicas`` and stop every acks=all write to them.
        """
        deadline = time.monotonic() + timeout
        behind: list[str] = []
        while time.monotonic() < deadline:
            behind = self.under_replicated()
            if not behind:
                return
            time.sleep(0.5)
        raise RuntimeError(
            f"{len(behind)} partitions still under-replicated after {timeout:.0f}s (e.g. {', '.join(behind[:5])}); "
            f"check every node runs: {self.data_dir}/node-*/broker.log"
        )

    def kill_node(self, node_id: int) -> bool:
        return self.node(node_id).kill()

    def stop_node(self, node_id: int, timeout: float = 30.0) -> bool:
        return self.node(node_id).stop(timeout)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop every node (controlled shutdown, all at once); True if any was running."""
        stopped: list[bool] = []
        self._on_every_node(lambda node: stopped.append(node.stop(timeout)))
        return any(stopped)

    def status(self) -> BrokerStatus:
        nodes = tuple(node.status() for node in self.nodes)
        live = [n for n in nodes if n.running]
        return BrokerStatus(
            running=len(live) == len(nodes),
            pid=live[0].pid if live else None,
            bootstrap=",".join(str(n.bootstrap) for n in live) or None,
            data_dir=self.data_dir,
            nodes=nodes,
        )
