"""Ingest on a real broker: a malformed record with a raw e-mail and phone leaves no plaintext behind.

The real ingest loop (built as the worker builds it) dead-letters the record;
``events.dlq`` and ``dlq.keys`` are read back byte for byte. The vault is
rebuilt from ``dlq.keys`` with the agent's own rules (``vault.apply``), the
dead letter opens; an erasure record, as the identity stage sends it, is put
on ``dlq.keys`` and the dead letter no longer opens. (The Faust agent, the
identity hook and ``omnipipe dlq show`` are run by tests/e2e/test_cli_pipeline.py.)
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from pipeline.app import build_ingest
from pipeline.broker.embedded import EmbeddedBroker
from pipeline.broker.reader import Record, iter_topic
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.dlq.crypto import KeyEncryptionKey, RawRecord
from pipeline.dlq.reader import Readability, open_dead_letter
from pipeline.dlq.vault import VaultView, apply, decode_record, erase_record
from pipeline.ingest.identifiers import PiiHasher
from pipeline.runtime.cluster import prepare_topics
from pipeline.settings import load_settings
from pipeline.topology.catalogue import DEFAULT_PATH, TopicCatalogue, load_catalogue

pytestmark = pytest.mark.broker

HASH_KEY = "vault-broker-test-hash-key-0123"
EMAIL, PHONE = "Ann.Example@Example.com", "+44 7700 900123"
NEEDLES = [EMAIL.encode(), EMAIL.lower().encode(), PHONE.encode(), b"+447700900123", b"447700900123"]
CODEC = AvroCodec(SchemaCatalogue.load())


def _catalogue(tmp: Path) -> TopicCatalogue:
    prefix = f"vault-{uuid.uuid4().hex[:8]}"
    doc = yaml.safe_load(DEFAULT_PATH.read_text())
    for spec in doc["topics"].values():
        spec["name"] = f"{prefix}.{spec['name']}"
        spec["partitions"] = 2
    path = tmp / "topics.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_catalogue(path)


def _vault(records: list[Record]) -> dict[bytes, bytes]:
    rows: dict[bytes, bytes] = {}
    for r in records:
        apply(rows, decode_record(r.value))
    return rows


def test_raw_contact_never_reaches_the_topics_and_an_erasure_shreds_it(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    cat = _catalogue(tmp_path)
    settings = load_settings(kafka_bootstrap_servers=broker.bootstrap_servers, pii_hash_key=HASH_KEY,
                             local_broker=True, data_dir=tmp_path / "state")
    prepare_topics(settings, cat)
    client = {"bootstrap.servers": broker.bootstrap_servers}
    web = cat["web"]
    future = int(time.time() * 1000) + 30 * 86_400_000  # refused: future_event_time, after it decoded
    record = {"event_id": "e-1", "event_time": future,
              "identifiers": {"customer_id": "C-1", "email": EMAIL, "phone": PHONE},
              "type": "SEARCH", "query": f"size 42 for {EMAIL}"}
    value = CODEC.encode(web.avro_subject, record)
    producer = Producer(client)
    producer.produce(web.name, value, EMAIL.encode())  # a producer that keys by e-mail, too
    assert producer.flush(10) == 0

    ingest = build_ingest(settings, cat, CODEC, CollectorRegistry())
    runner = threading.Thread(target=ingest.run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 60
    while (ingest.stats.dead_lettered < 1 or ingest.stats.commits < 1) and time.monotonic() < deadline:
        time.sleep(0.2)
    ingest.stop()
    runner.join(30)
    assert ingest.stats.dead_lettered == 1 and ingest.stats.accepted == 0

    [stored] = list(iter_topic(client, cat["dlq"].name, idle_s=1.0))
    keys = list(iter_topic(client, cat["dlq_keys"].name, idle_s=1.0))
    on_the_wire = b"".join((r.key or b"") + (r.value or b"") for r in [stored, *keys])
    for needle in NEEDLES:
        assert needle not in on_the_wire, needle
    dead = CODEC.decode(stored.value or b"", cat["dlq"].avro_subject)
    hasher = PiiHasher(HASH_KEY.encode())
    person = ["cust:C-1", f"email:{hasher.email(EMAIL)}", f"phone:{hasher.phone(PHONE)}"]
    assert dead["reason"] == "future_event_time" and dead["filed_under"] == person
    assert sorted(r.key for r in keys) == sorted(ref.encode() for ref in person)  # keyed by ref

    kek = KeyEncryptionKey(settings.dlq_master_key())
    opened = open_dead_letter(dead, kek, VaultView(_vault(keys)))
    assert opened.readability is Readability.DECRYPTED
    assert opened.record == RawRecord(EMAIL.encode(), value)  # what a fix-and-replay needs, byte for byte

    # the person is erased: the identity stage sends one erase per ref of theirs on dlq.keys
    erased = person[1]
    producer.produce(cat["dlq_keys"].name, erase_record(erased, future), erased.encode())
    assert producer.flush(10) == 0
    after = list(iter_topic(client, cat["dlq_keys"].name, idle_s=1.0))
    gone = open_dead_letter(dead, kek, VaultView(_vault(after)))
    assert gone.readability is Readability.ERASED and gone.record is None
