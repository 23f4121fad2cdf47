"""Stage loops report their assignment through StageStatus, on the session broker.

Two identity loops share one group over single-partition topics: one owns
partition 0 of every input, the other owns nothing and is ready all the same
(more workers than partitions); when the owner stops, the other takes over.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pipeline.app import build_identity
from pipeline.broker.admin import ensure_topics
from pipeline.broker.embedded import EmbeddedBroker
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.settings import load_settings
from pipeline.topology.catalogue import TopicCatalogue, load_catalogue
from pipeline.web.health import readiness

pytestmark = pytest.mark.broker
CODEC = AvroCodec(SchemaCatalogue.load())


def _wait(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not check():
        time.sleep(0.1)
    assert check()


def test_a_loop_without_partitions_is_ready_and_the_other_takes_over_when_one_stops(
        broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tag = uuid.uuid4().hex[:6]
    cat = TopicCatalogue({k: dataclasses.replace(v, name=f"status-{tag}.{v.name}")
                          for k, v in load_catalogue().with_partitions(1).topics.items()})
    ensure_topics({"bootstrap.servers": broker.bootstrap_servers}, cat)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
    monkeypatch.setenv("OMNIPIPE_PII_HASH_KEY", "k" * 32)
    monkeypatch.setenv("OMNIPIPE_LOCAL_BROKER", "1")
    monkeypatch.setenv("OMNIPIPE_GROUP_ID", f"status-{tag}")
    loops = []
    for name in ("a", "b"):
        monkeypatch.setenv("OMNIPIPE_DATA_DIR", str(tmp_path / name))
        loops.append(build_identity(load_settings(), cat, CODEC, CollectorRegistry()))
    assert not readiness([lp.status for lp in loops]).alive
    threads = [threading.Thread(target=lp.run, daemon=True) for lp in loops]
    inputs = {cat["canonical"].name, cat["identity_messages"].name, cat["identity_forget"].name}
    try:
        for t in threads:
            t.start()
        _wait(lambda: readiness([lp.status for lp in loops]).ready
                      and sum(len(lp.status.assigned) for lp in loops) == 3)
        owner, idle = sorted(loops, key=lambda lp: -len(lp.status.assigned))
        assert owner.status.assigned == {(topic, 0) for topic in inputs}
        assert idle.status.assigned == frozenset() and idle.status.ready
        assert {lp.status.group_id for lp in loops} == {f"status-{tag}-identity"}
        owner.stop()
        threads[loops.index(owner)].join(30)
        assert not owner.status.running and not readiness([owner.status]).alive
        _wait(lambda: idle.status.assigned == {(topic, 0) for topic in inputs} and idle.status.ready)
    finally:
        for lp in loops:
            lp.stop()
        for t in threads:
            t.join(30)
