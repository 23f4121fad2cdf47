"""Simulated e-mail, push and SMS senders for the demo: they close the loop on triggers.

They do what a real sender does with ``triggers.<channel>``: drop repeats by
idempotency key, honour withdrawals (``cancels``), "send" at ``send_after``
and report back on ``events.email|push|sms`` with the trigger's key in
``trigger_key`` (sent, delivered, and sometimes opened/clicked or an
unsubscribe), identifying the person by the trigger's customer id. The
profile stage links those reports to the trigger (outcome metrics).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer

from pipeline.contracts.errors import DecodeError
from pipeline.topology.catalogue import Role, TopicCatalogue

Decode = Callable[[bytes, str], dict[str, Any]]
Encode = Callable[[str, dict[str, Any]], bytes]

MIN_MS = 60_000
#: channel -> (input topic key, the answer report, its share, the opt-out report, its share)
REPORTS = {
    "EMAIL": ("email", "OPENED", 0.3, "UNSUBSCRIBED", 0.01),
    "PUSH": ("push", "OPENED", 0.2, "UNSUBSCRIBED", 0.01),
    "SMS": ("sms", "CLICKED", 0.15, "STOP", 0.01),
}


@dataclass
class SenderStats:
    triggers: int = 0
    sent: int = 0
    withdrawn: int = 0
    repeats: int = 0
    no_customer: int = 0  # a sender here identifies the person by customer id only
    reports: int = 0
    keys: set[str] = field(default_factory=set)
    #: customer id -> channel -> reports sent back (they count in that customer's profile)
    reports_by_customer: dict[str, Counter[str]] = field(default_factory=dict)


class SimulatedSenders:
    def __init__(self, client: Mapping[str, Any], catalogue: TopicCatalogue, decode: Decode, encode: Encode,
                 stop: threading.Event, seed: int = 7) -> None:
        self.client = dict(client)
        self.catalogue = catalogue
        self._decode = decode
        self.encode = encode
        self.stop = stop
        self.rnd = random.Random(seed)
        self.stats = SenderStats()
        self._cancelled: set[str] = set()
        self.thread = threading.Thread(target=self.run, name="omnipipe-senders", daemon=True)

    def run(self) -> None:
        topics = {t.name: t for t in self.catalogue.by_role(Role.OUTPUT)}
        consumer = Consumer({**self.client, "group.id": "omnipipe-demo-senders",
                             "auto.offset.reset": "earliest", "fetch.wait.max.ms": 50})
        producer = Producer({**self.client, "linger.ms": 20})
        consumer.subscribe(sorted(topics))
        try:
            while not self.stop.is_set():
                for msg in consumer.consume(num_messages=200, timeout=0.2):
                    if msg.error() is not None or not msg.value():
                        continue
                    spec = topics[msg.topic()]  # type: ignore[index]
                    try:
                        trigger = self._decode(msg.value(), spec.avro_subject)  # type: ignore[arg-type]
                    except DecodeError:
                        continue
                    self._handle(producer, trigger)
                producer.poll(0)
        finally:
            consumer.close()
            producer.flush(5)

    def _handle(self, producer: Producer, trigger: dict[str, Any]) -> None:
        st = self.stats
        key = trigger["idempotency_key"]
        if trigger.get("cancels"):
            self._cancelled.add(trigger["cancels"])
            return
        st.triggers += 1
        if key in st.keys:
            st.repeats += 1
            return
        st.keys.add(key)
        if key in self._cancelled:
            st.withdrawn += 1
            return
        if not trigger.get("customer_id"):
            st.no_customer += 1
            return
        st.sent += 1
        channel = trigger["channel"]
        topic_key, answer, answer_share, opt_out, opt_out_share = REPORTS[channel]
        spec = self.catalogue[topic_key]
        t = max(trigger["send_after"], trigger["created_at"]) + self.rnd.randrange(1, 5) * MIN_MS
        reports = ["SENT", "DELIVERED"]
        r = self.rnd.random()
        if r < answer_share:
            reports.append(answer)
        elif r < answer_share + opt_out_share:
            reports.append(opt_out)
        ids = {"customer_id": trigger["customer_id"], "loyalty_card": None, "email": None, "phone": None,
               "device_id": None, "anonymous_id": None}
        for i, report in enumerate(reports):
            value = {"event_id": f"snd-{key}-{report}", "event_time": t + i * 5 * MIN_MS,
                     "identifiers": ids, "timezone": None, "locale": None, "type": report,
                     "message_id": f"m-{key}", "trigger_key": key, "campaign": trigger["action"], "url": None}
            producer.produce(spec.name, self.encode(spec.avro_subject, value), key.encode())
            st.reports += 1
            st.reports_by_customer.setdefault(trigger["customer_id"], Counter())[channel] += 1
