"""Embedded Apache Kafka (KRaft, no ZooKeeper): one broker or a 3-broker cluster on loopback.

The jars come from Maven Central through ``deploy/kafka/pom.xml`` (exact
versions), copied once into a local cache by ``make install`` where Java 17+
and Maven are present. Each start formats storage in a fresh directory, waits
until the cluster answers a metadata request with every broker, and stops
every process on exit, on signals and when the parent dies (each broker is
its own process group with a parent-death signal), so none is left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from pipeline.broker.embedded import _die_with_parent, kafka_api_versions_ok
from pipeline.errors import BrokerStartError

KAFKA_VERSION = "4.1.1"  # keep equal to deploy/kafka/pom.xml
POM = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "pom.xml"
#: Heap per broker: the embedded cluster runs beside the pipeline on small machines.
HEAP = "-Xmx512m"


def cache_dir() -> Path:
    """Where ``make install`` puts the broker's jars (OMNIPIPE_CACHE_DIR, else ~/.cache/omnipipe)."""
    base = os.environ.get("OMNIPIPE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "omnipipe")
    return Path(base) / f"kafka-{KAFKA_VERSION}"


def java_binary() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def java_major(java: str) -> int | None:
    """The major version of a java binary (17 for "17.0.15"), None if it does not run."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=20).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    for token in out.split():
        token = token.strip('"')
        if token[:1].isdigit():
            head = token.split(".")[0].split("-")[0]
            return int(head) if head.isdigit() else None
    return None


def unavailable_reason() -> str | None:
    """Why the embedded Apache Kafka cannot run here (None: it can)."""
    java = java_binary()
    if java is None:
        return "no java on PATH (Java 17+ is needed for Apache Kafka)"
    major = java_major(java)
    if major is None or major < 17:
        return f"{java} is Java {major or 'of unknown version'}; Apache Kafka 4 needs Java 17+"
    lib = cache_dir() / "lib"
    if not (lib / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        return f"the Apache Kafka {KAFKA_VERSION} jars are not in {lib}; run `make install` (needs Maven)"
    return None


def fetch_jars(quiet: bool = True) -> Path:
    """Copy the pinned jars from Maven (its local repository, else Maven Central) into the cache."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerStartError("cannot fetch Apache Kafka: no `mvn` on PATH (install Maven)")
    lib = cache_dir() / "lib"
    tmp = lib.with_name("lib.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [mvn, "-B", "-f", str(POM), "dependency:copy-dependencies",
           f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"]
    if quiet:
        cmd.insert(1, "-q")
    done = subprocess.run(cmd, capture_output=quiet, text=True)
    if done.returncode != 0:
        tail = (done.stdout or "").strip().splitlines()[-3:] if quiet else []
        raise BrokerStartError(f"mvn could not fetch Apache Kafka {KAFKA_VERSION}: " + " | ".join(tail))
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    return lib


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = {level}
logger.state.name = state.change.logger
logger.state.level = warn
"""


@dataclass
class _Node:
    node_id: int
    port: int
    controller_port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None
    out: BinaryIO | None = None


@dataclass
class KafkaCluster:
    """Apache Kafka brokers in combined (broker + controller) KRaft mode on loopback ports.

    ``brokers=1`` is the embedded default; ``brokers=3`` gives replication factor 3 with
    ``min.insync.replicas=2`` for tests and fault scenarios. Use as a context manager.
    """

    brokers: int = 1
    port: int = 0  # the first broker's port (0: a free one)
    storage_dir: Path | None = None  # a fresh directory under it (default: the system temp dir)
    startup_timeout_s: float = 90.0
    log_level: str = "WARN"
    log_dir: Path | None = None  # keep each broker's log here as kafka-<id>.log (default: its storage)
    nodes: list[_Node] = field(default_factory=list, init=False, repr=False)
    _root: Path | None = field(default=None, init=False, repr=False)
    _cluster_id: str = field(default="", init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def pid(self) -> int | None:
        """The first broker's process id."""
        return self.nodes[0].proc.pid if self.nodes and self.nodes[0].proc else None

    @property
    def first_port(self) -> int:
        """The first broker's port (the chosen one when ``port`` was 0)."""
        return self.nodes[0].port if self.nodes else self.port

    @property
    def root(self) -> Path | None:
        """The fresh directory holding every broker's storage (removed on stop)."""
        return self._root

    @property
    def replication_factor(self) -> int:
        return min(self.brokers, 3)

    # -- start ---------------------------------------------------------------

    def _prepare(self) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise BrokerStartError(f"cannot start the embedded Apache Kafka: {reason}")
        for i in range(self.brokers if self.port else 0):
            if not _port_free(self.port + i):
                raise BrokerStartError(
                    f"cannot start the embedded Apache Kafka: port {self.port + i} is in use")
        parent = self.storage_dir or Path(tempfile.gettempdir())
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self._root = Path(tempfile.mkdtemp(prefix="omnipipe-kafka-", dir=parent))
        except OSError as exc:
            raise BrokerStartError(
                f"cannot start the embedded Apache Kafka: storage directory {parent} is not writable "
                f"({exc.strerror or exc})") from None
        self._cluster_id = _cluster_id()
        for i in range(self.brokers):
            port = self.port + i if self.port else _free_port()
            directory = self._root / f"node-{i + 1}"
            directory.mkdir()
            self.nodes.append(_Node(i + 1, port, _free_port(), directory))

    def _properties(self, node: _Node) -> str:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        rf = self.replication_factor
        isr = 2 if rf >= 3 else 1
        props = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": node.directory / "data",
            "num.partitions": 1,
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": 8,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "transaction.state.log.num.partitions": 8,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            "group.initial.rebalance.delay.ms": 0,
            # a killed broker is fenced (its partitions get new leaders) within 3 s, not 9 s: the
            # cluster is on loopback, and fault scenarios kill brokers on purpose
            "broker.heartbeat.interval.ms": 500,
            "broker.session.timeout.ms": 3000,
            "auto.create.topics.enable": "false",
            # the log cleaner applies compaction, as on a production cluster; it only cleans closed
            # segments, so they roll every 30 s (not 7 days) and tests and fault scenarios see it
            # within a run
            "log.roll.ms": 30_000,
            "log.cleaner.backoff.ms": 1000,
            "log.cleaner.threads": 1,
            "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,
            "num.network.threads": 2,
            "num.io.threads": 4,
            "num.recovery.threads.per.data.dir": 1,
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _log_path(self, node: _Node) -> Path:
        if self.log_dir is None:
            return node.directory / "server.log"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self.log_dir / f"kafka-{node.node_id}.log"

    def _out_path(self, node: _Node) -> Path:
        return node.directory / "stdout.log" if self.log_dir is None else self._log_path(node)

    def _cause(self, node: _Node) -> str:
        """The line of a broker's log that says why it stopped ("" if none does)."""
        lines: list[str] = []
        for path in dict.fromkeys((self._log_path(node), self._out_path(node))):
            with contextlib.suppress(OSError):
                lines += path.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if " ERROR " in line or " FATAL " in line:
                # the exception's own message follows the "Exiting Kafka" line
                for after in lines[i + 1:i + 4]:
                    if "Exception: " in after or "Error: " in after:
                        return after.split(": ", 1)[1].strip()
                return line.split(" ", 3)[-1].strip()
        return ""

    def _spawn(self, node: _Node) -> None:
        java = java_binary()
        assert java is not None
        config = node.directory / "server.properties"
        classpath = str(cache_dir() / "lib" / "*")
        log4j = node.directory / "log4j2.properties"
        log4j.write_text(LOG4J2.format(log=self._log_path(node), level=self.log_level))
        jvm = [java, HEAP, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={node.directory}",
               "-cp", classpath]
        node.out = open(self._out_path(node), "ab")  # noqa: SIM115 - closed in stop()
        node.proc = subprocess.Popen([*jvm, "kafka.Kafka", str(config)], stdin=subprocess.DEVNULL,
                                     stdout=node.out, stderr=node.out, preexec_fn=_die_with_parent)

    def _format(self, node: _Node) -> None:
        java = java_binary()
        assert java is not None
        config = node.directory / "server.properties"
        config.write_text(self._properties(node))
        done = subprocess.run(
            [java, "-Xmx256m", "-cp", str(cache_dir() / "lib" / "*"), "kafka.tools.StorageTool", "format",
             "-t", self._cluster_id, "-c", str(config), "--ignore-formatted"],
            capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise BrokerStartError(f"cannot format Apache Kafka storage in {node.directory}: {last[0]}")

    def start(self) -> KafkaCluster:
        if self.nodes:
            return self
        atexit.register(self.stop)
        try:
            self._prepare()
            for node in self.nodes:
                self._format(node)
            for node in self.nodes:
                self._spawn(node)
            self._wait_ready(self.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout_s: float, via: _Node | None = None) -> None:
        """Until a metadata request (to ``via`` only, if given) lists every broker."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout_s
        servers = f"127.0.0.1:{via.port}" if via is not None else self.bootstrap_servers
        conf: dict[str, Any] = {"bootstrap.servers": servers, "logger": _QUIET}
        admin = AdminClient(conf)
        while time.monotonic() < deadline:
            for node in self.nodes if via is None else [via]:
                if node.proc is not None and node.proc.poll() is not None:
                    cause = self._cause(node) or f"see {self._log_path(node)}"
                    raise BrokerStartError(
                        f"embedded Apache Kafka broker {node.node_id} exited at start with code "
                        f"{node.proc.returncode}: {cause}")
            # a broker serves clients once it has caught up and been unfenced
            if via is not None and not kafka_api_versions_ok("127.0.0.1", via.port):
                time.sleep(0.2)
                continue
            try:
                md = admin.list_topics(timeout=2)
                if len(md.brokers) == len(self.nodes):
                    return
            except Exception:
                pass  # not up yet
            time.sleep(0.2)
        raise BrokerStartError(
            f"embedded Apache Kafka did not answer a metadata request with {len(self.nodes)} broker(s) "
            f"within {timeout_s:.0f}s" + (f": {cause}" if (cause := self._cause(self.nodes[0])) else ""))

    # -- faults --------------------------------------------------------------

    def kill(self, node_id: int) -> None:
        """SIGKILL one broker (fault scenarios)."""
        node = self.nodes[node_id - 1]
        if node.proc is not None and node.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.proc.pid, signal.SIGKILL)
            node.proc.wait(timeout=10)

    def restart(self, node_id: int, timeout_s: float = 60.0) -> None:
        """Start a killed broker again on its storage and ports; wait until the cluster sees it."""
        node = self.nodes[node_id - 1]
        if node.out is not None:
            node.out.close()
        self._spawn(node)
        # the others may still list it from before the kill: ready is when it answers itself
        self._wait_ready(timeout_s, via=node)

    # -- stop ----------------------------------------------------------------

    def stop(self) -> None:
        nodes, self.nodes = self.nodes, []
        for node in nodes:
            if node.proc is not None and node.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.proc.pid, signal.SIGTERM)
        for node in nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.proc.pid, signal.SIGKILL)
                node.proc.wait(timeout=5)
            if node.out is not None:
                node.out.close()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


#: librdkafka's connection-refused lines while the broker boots say nothing useful
_QUIET = logging.getLogger("omnipipe.kafka-probe")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (as kafka-storage makes).

    Like Kafka's ``Uuid.randomUuid``, never one that starts with "-": the storage tool would read
    it as an option (1 start in 64 failed with "argument --cluster-id/-t: expected one argument").
    """
    import base64

    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid
