"""The embedded Apache Kafka launcher: ready, replicated, no orphans, clear when it cannot start."""

from __future__ import annotations

import base64
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from pipeline.broker.admin import ensure_topics
from pipeline.broker.kafka_process import KAFKA_VERSION, KafkaCluster
from pipeline.errors import BrokerStartError, ExitCode
from pipeline.topology.catalogue import TopicCatalogue, load_catalogue

from .test_embedded import _alive, _wait_gone


@pytest.mark.broker
def test_the_session_broker_answers_metadata_with_every_broker(broker: KafkaCluster) -> None:
    md = AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(timeout=10)
    assert sorted(b.id for b in md.brokers.values()) == [n.node_id for n in broker.nodes] == [1]
    host, port = broker.bootstrap_servers.split(":")
    assert host == "127.0.0.1" and int(port) == broker.first_port  # loopback only


@pytest.mark.broker
def test_topics_are_created_idempotently_on_kafka(broker: KafkaCluster) -> None:
    tag = uuid.uuid4().hex[:6]
    base = load_catalogue().with_partitions(2)
    cat = TopicCatalogue({k: dataclasses.replace(v, name=f"kp-{tag}.{v.name}")
                          for k, v in base.topics.items()})
    conf = {"bootstrap.servers": broker.bootstrap_servers}
    assert set(ensure_topics(conf, cat).values()) == {"created"}
    assert set(ensure_topics(conf, cat).values()) == {"exists"}
    md = AdminClient(conf).list_topics(timeout=10)
    assert all(len(md.topics[t.name].partitions) == 2 for t in cat)


def _pids(cluster: KafkaCluster) -> list[int]:
    pids = [n.proc.pid for n in cluster.nodes if n.proc is not None]
    assert len(pids) == len(cluster.nodes)
    return pids


@pytest.mark.broker
def test_three_brokers_replicate_with_min_insync_2_survive_a_kill_and_stop_leaves_no_process(
        tmp_path: Path) -> None:
    with KafkaCluster(brokers=3, storage_dir=tmp_path) as cluster:
        pids = _pids(cluster)
        assert all(_alive(p) for p in pids)
        conf = {"bootstrap.servers": cluster.bootstrap_servers}
        admin = AdminClient(conf)
        assert len(admin.list_topics(timeout=10).brokers) == 3
        topic = f"rf3-{uuid.uuid4().hex[:6]}"
        admin.create_topics([NewTopic(topic, 3)])[topic].result(30)  # the broker's default RF: 3
        deadline = time.monotonic() + 30
        md = admin.list_topics(topic, timeout=10).topics[topic]
        while len(md.partitions) < 3 and time.monotonic() < deadline:  # metadata reaches every broker
            time.sleep(0.2)
            md = admin.list_topics(topic, timeout=10).topics[topic]
        assert len(md.partitions) == 3
        assert all(sorted(p.replicas) == [1, 2, 3] and len(p.isrs) == 3 for p in md.partitions.values())
        configs = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
        [described] = [f.result(10) for f in configs.values()]
        assert described["min.insync.replicas"].value == "2"

        leader = md.partitions[0].leader
        cluster.kill(leader)
        assert not _alive(pids[leader - 1])
        producer = Producer({**conf, "acks": "all", "message.timeout.ms": 30000})
        failed: list[object] = []
        for i in range(20):
            producer.produce(topic, b"v%d" % i, partition=0,
                             on_delivery=lambda err, _m: failed.append(err) if err else None)
        assert producer.flush(40) == 0 and failed == []  # 2 of 3 in sync: acks=all still succeeds
        cluster.restart(leader)
        assert len(admin.list_topics(timeout=10).brokers) == 3
        pids = _pids(cluster)
        root = cluster.root
    assert not any(_alive(p) for p in pids)
    assert cluster.nodes == [] and root is not None and not root.exists()


def _spawn_owner(tmp: Path) -> tuple[subprocess.Popen[str], list[int]]:
    code = textwrap.dedent(f"""
        import signal, sys, time
        # Ctrl-C as in a terminal (a suite run from a background job inherits SIGINT ignored)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from pathlib import Path
        from pipeline.broker.kafka_process import KafkaCluster
        c = KafkaCluster(storage_dir=Path({str(tmp)!r})).start()
        print(" ".join(str(n.proc.pid) for n in c.nodes), flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip(), f"the owner did not start its broker (exit {proc.wait(10)})"
    return proc, [int(p) for p in line.split()]


@pytest.mark.broker
def test_ctrl_c_leaves_no_orphan(tmp_path: Path) -> None:
    proc, pids = _spawn_owner(tmp_path)
    assert all(_alive(p) for p in pids)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)  # the owner's exit runs KafkaCluster.stop: at worst 10 s TERM + 5 s KILL
    assert all(_wait_gone(p) for p in pids)
    assert list(tmp_path.iterdir()) == []  # its storage went with it


@pytest.mark.broker
def test_kill_9_of_the_owner_leaves_no_orphan(tmp_path: Path) -> None:
    proc, pids = _spawn_owner(tmp_path)
    proc.kill()
    proc.wait(timeout=10)
    assert all(_wait_gone(p) for p in pids)


def _one_line(exc: pytest.ExceptionInfo[BrokerStartError]) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


def test_a_storage_directory_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(BrokerStartError) as exc:
        KafkaCluster(storage_dir=blocker / "kafka").start()
    message = _one_line(exc)
    assert "storage directory" in message and str(blocker / "kafka") in message


def test_a_port_in_use_is_named() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerStartError) as exc:
            KafkaCluster(port=port).start()
    assert f"port {port} is in use" in _one_line(exc)


@pytest.mark.broker
def test_a_port_taken_during_start_is_named_from_the_broker_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pre-check cannot see a port taken after it: the broker's own bind error is the message."""
    monkeypatch.setattr("pipeline.broker.kafka_process._port_free", lambda _port: True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerStartError) as exc:
            KafkaCluster(port=port, storage_dir=tmp_path).start()
    message = _one_line(exc)
    assert f"127.0.0.1:{port}" in message and "Address already in use" in message
    assert list(tmp_path.iterdir()) == []  # nothing left behind


@pytest.mark.parametrize("java_home", [None, "empty"])
def test_no_java_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, java_home: str | None) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on PATH
    if java_home is None:
        monkeypatch.delenv("JAVA_HOME", raising=False)
    else:
        (tmp_path / java_home / "bin").mkdir(parents=True)  # a JAVA_HOME without bin/java
        monkeypatch.setenv("JAVA_HOME", str(tmp_path / java_home))
    with pytest.raises(BrokerStartError) as exc:
        KafkaCluster(storage_dir=tmp_path).start()
    assert "no java on PATH" in _one_line(exc)


def _no_java_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KAFKA_", "OMNIPIPE_")) and k != "JAVA_HOME"}
    (tmp / "bin").mkdir(exist_ok=True)
    env.update({"PATH": str(tmp / "bin"), "OMNIPIPE_DATA_DIR": str(tmp / "state"), **extra})
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_worker_forced_onto_kafka_without_java_exits_4_with_one_line(tmp_path: Path) -> None:
    env = _no_java_env(tmp_path, OMNIPIPE_EMBEDDED_BROKER="kafka", OMNIPIPE_WEB_PORT=str(_free_port()),
                       OMNIPIPE_METRICS_PORT=str(_free_port()))
    done = subprocess.run([sys.executable, "-m", "pipeline", "worker"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == ExitCode.UNAVAILABLE == 4, done.stderr[-2000:]
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "Apache Kafka" in lines[0] and "OMNIPIPE_EMBEDDED_BROKER=kafka" in lines[0]
    assert "no java on PATH" in lines[0]


def test_the_pinned_version_is_the_one_in_the_pom() -> None:
    import xml.etree.ElementTree as ET

    from pipeline.broker.kafka_process import POM

    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    deps = {d.findtext("m:artifactId", namespaces=ns): d.findtext("m:version", namespaces=ns)
            for d in ET.parse(POM).getroot().iterfind("m:dependencies/m:dependency", ns)}
    assert deps["kafka_2.13"] == KAFKA_VERSION


@pytest.mark.broker
def test_compaction_is_applied(broker: KafkaCluster) -> None:
    """Unlike Tansu, the embedded Kafka compacts: older values of a key go, the latest stays."""
    from pipeline.broker.reader import iter_topic

    conf = {"bootstrap.servers": broker.bootstrap_servers}
    topic = f"compact-{uuid.uuid4().hex[:6]}"
    admin = AdminClient(conf)
    settings = {"cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01"}
    admin.create_topics([NewTopic(topic, 1, 1, config=settings)])[topic].result(10)
    producer = Producer({**conf, "linger.ms": 0})
    for i in range(30):  # 30 values of one key over several segments (each append after 100 ms rolls)
        producer.produce(topic, b"v%d" % i, b"k")
        producer.flush(10)
        time.sleep(0.12)
    deadline = time.monotonic() + 60
    values = [r.value for r in iter_topic(conf, topic)]
    while len(values) >= 30 and time.monotonic() < deadline:
        time.sleep(1)
        values = [r.value for r in iter_topic(conf, topic)]
    assert len(values) < 30 and values[-1] == b"v29"


def test_a_cluster_id_never_reads_as_an_option(monkeypatch: pytest.MonkeyPatch) -> None:
    """1 random id in 64 starts with "-", which kafka-storage took for an option and refused."""
    from pipeline.broker import kafka_process

    dashed = uuid.UUID(bytes=base64.urlsafe_b64decode("-" + "A" * 21 + "=="))
    ids = iter([dashed, uuid.UUID(int=1)])
    monkeypatch.setattr(kafka_process.uuid, "uuid4", lambda: next(ids))
    cid = kafka_process._cluster_id()
    assert not cid.startswith("-") and len(cid) == 22
