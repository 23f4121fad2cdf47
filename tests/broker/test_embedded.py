"""The embedded Tansu launcher (the zero-Java fallback): serves, stops, leaves no orphan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from confluent_kafka.admin import AdminClient

from pipeline.broker.admin import ensure_topics
from pipeline.broker.embedded import EmbeddedBroker, kafka_api_versions_ok
from pipeline.topology.catalogue import load_catalogue

pytestmark = pytest.mark.broker


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); check its state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_broker_answers_kafka_requests(tansu_broker: EmbeddedBroker) -> None:
    host, port = tansu_broker.bootstrap_servers.split(":")
    assert kafka_api_versions_ok(host, int(port))
    md = AdminClient({"bootstrap.servers": tansu_broker.bootstrap_servers}).list_topics(timeout=10)
    assert md.brokers


def test_topics_are_created_idempotently(tansu_broker: EmbeddedBroker) -> None:
    cat = load_catalogue().with_partitions(2)
    conf = {"bootstrap.servers": tansu_broker.bootstrap_servers}
    first = ensure_topics(conf, cat)
    second = ensure_topics(conf, cat)
    assert set(first) == {t.name for t in cat}
    assert set(second.values()) == {"exists"}
    md = AdminClient(conf).list_topics(timeout=10)
    for spec in cat:
        assert spec.name in md.topics


def test_stop_leaves_no_process() -> None:
    b = EmbeddedBroker().start()
    pid = b.pid
    assert pid is not None and _alive(pid)
    b.stop()
    assert not _alive(pid)


def _spawn_owner() -> tuple[subprocess.Popen[str], int]:
    code = textwrap.dedent("""
        import signal, sys, time
        # Ctrl-C as in a terminal: a suite started from a background job inherits SIGINT ignored,
        # and Python then never raises KeyboardInterrupt (the test failed that way, not the broker)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from pipeline.broker.embedded import EmbeddedBroker
        b = EmbeddedBroker().start()
        print(b.pid, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_ctrl_c_leaves_no_orphan() -> None:
    proc, pid = _spawn_owner()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=20)  # the owner's exit runs EmbeddedBroker.stop: at worst 5 s TERM + 5 s KILL
    assert _wait_gone(pid)


def test_kill_9_of_the_owner_leaves_no_orphan() -> None:
    proc, pid = _spawn_owner()
    proc.kill()
    proc.wait(timeout=10)
    assert _wait_gone(pid)
