"""Next-best-action in the profile loop on the session broker: triggers, timers, the feed, models, restarts.

The loop runs alone (no ingest or identity): canonical events are published
on events.resolved keyed by profile id, at wall-clock times, and the
decisions are read back from triggers.<channel> as the senders would.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from pipeline.app import build_profile
from pipeline.broker.admin import ensure_topics
from pipeline.broker.embedded import EmbeddedBroker
from pipeline.broker.reader import iter_topic
from pipeline.contracts.catalogue import SchemaCatalogue
from pipeline.contracts.codec import AvroCodec
from pipeline.nba.catalogue import DEFAULT_PATH, load_action_catalogue
from pipeline.profile.engine import TIMER_PREFIX, VIEWED_PREFIX
from pipeline.profile.runner import ProfileLoop
from pipeline.settings import load_settings
from pipeline.state.changelog import restore_partitions
from pipeline.state.partition_store import PartitionStore
from pipeline.topology.catalogue import TopicCatalogue, load_catalogue

pytestmark = pytest.mark.broker
CANONICAL = "omnipipe.canonical.CanonicalEvent"
TRIGGER = "omnipipe.triggers.Trigger"
STOCK = "omnipipe.catalogue.StockChange"
CODEC = AvroCodec(SchemaCatalogue.load())


def _catalogue(tag: str) -> TopicCatalogue:
    cat = load_catalogue().with_partitions(2)
    return TopicCatalogue(
        {k: dataclasses.replace(v, name=f"nba-{tag}.{v.name}") for k, v in cat.topics.items()}
    )


def _actions(tmp: Path) -> Path:
    """The shipped catalogue with a 2 s cart timer and no holdout, so the test needs no half hour."""
    text = DEFAULT_PATH.read_text()
    text = text.replace("trigger: {timer: cart_idle, after: 30m}", "trigger: {timer: cart_idle, after: 2s}")
    text = text.replace("fraction: 0.05", "fraction: 0.0")
    path = tmp / "actions.yaml"
    path.write_text(text)
    load_action_catalogue(path)
    return path


def _loop(
    broker: EmbeddedBroker, cat: TopicCatalogue, tmp: Path, monkeypatch: pytest.MonkeyPatch, tag: str
) -> tuple[ProfileLoop, CollectorRegistry]:
    for name, value in {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "OMNIPIPE_PII_HASH_KEY": "k" * 32,
        "OMNIPIPE_LOCAL_BROKER": "1",
        "OMNIPIPE_DATA_DIR": str(tmp / "state"),
        "OMNIPIPE_GROUP_ID": f"nba-{tag}",
        "OMNIPIPE_ACTIONS_CONFIG": str(_actions(tmp)),
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    registry = CollectorRegistry()
    return build_profile(
        settings, cat, CODEC, registry, load_action_catalogue(settings.actions_config_path)
    ), registry


class Running:
    def __init__(self, loop: ProfileLoop) -> None:
        self.loop = loop
        self.thread = threading.Thread(target=loop.run, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def wait(self, check: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not check():
            assert self.thread.is_alive()
            time.sleep(0.1)
        assert check()

    def __exit__(self, *exc: object) -> None:
        self.loop.stop()
        self.thread.join(30)


def _event(profile: str, kind: str, t: int, n: int, **fields: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "event_id": f"{profile}-{n}",
        "event_time": t,
        "ingest_time": t,
        "channel": "WEB",
        "type": kind,
        "key": profile,
        "customer_id": profile[5:],
        "loyalty_card": None,
        "email_hash": f"{n:064x}"[-64:],
        "phone_hash": None,
        "device_id": None,
        "anonymous_id": None,
        "timezone": "UTC",
        "locale": None,
        "sku": None,
        "category": None,
        "price": None,
        "query": None,
        "items": [],
        "order_id": None,
        "amount": None,
        "currency": "EUR",
        "store_id": None,
        "region": None,
        "distance_m": None,
        "push_token": None,
        "push_enabled": None,
        "message_id": None,
        "trigger_key": None,
        "reason": None,
        "consent_channel": None,
        "consent_purpose": None,
        "consent_granted": None,
        "source_topic": "events.web",
        "source_partition": 0,
        "source_offset": n,
    }
    ev.update(fields)
    return ev


def _triggers(client: dict[str, str], cat: TopicCatalogue) -> list[tuple[bytes | None, dict[str, Any]]]:
    out = []
    for key in ("triggers_email", "triggers_push", "triggers_sms"):
        out += [
            (r.key, CODEC.decode(r.value or b"", TRIGGER))
            for r in iter_topic(client, cat[key].name, idle_s=1.0)
        ]
    return out


def test_triggers_timers_feed_models_and_restart(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:6]
    cat = _catalogue(tag)
    client = {"bootstrap.servers": broker.bootstrap_servers}
    ensure_topics(client, cat)
    producer = Producer({**client, "partitioner": "murmur2_random"})
    now = int(time.time() * 1000)
    consent = {"consent_channel": "EMAIL", "consent_purpose": "marketing", "consent_granted": True}

    def publish(*events: dict[str, Any]) -> None:
        for ev in events:
            producer.produce(cat["resolved"].name, CODEC.encode(CANONICAL, ev), ev["key"].encode())
        assert producer.flush(10) == 0

    # A buys in a store with e-mail consent; B the same without consent; C views a product; D fills a cart
    publish(
        _event("cust:A", "consent_change", now - 5000, 1, channel=None, **consent),
        _event(
            "cust:A",
            "store_purchase",
            now - 4000,
            2,
            channel="POS",
            store_id="S1",
            amount=30.0,
            items=[{"sku": "SKU-1", "category": "shoes", "quantity": 1, "unit_price": 30.0}],
        ),
        _event("cust:B", "store_purchase", now - 4000, 3, channel="POS", store_id="S1", amount=30.0),
        _event("cust:C", "consent_change", now - 5000, 4, channel=None, **consent),
        _event("cust:C", "product_view", now - 4000, 5, sku="SKU-9", category="toys"),
        _event("cust:D", "consent_change", now - 5000, 6, channel=None, **consent),
        _event("cust:D", "add_to_cart", now - 1000, 7, sku="SKU-3", category="toys", price=40.0),
    )
    loop, registry = _loop(broker, cat, tmp_path, monkeypatch, tag)
    with Running(loop) as run:
        run.wait(lambda: loop.stats.folds >= 7 and loop.stats.idle_since is not None)
        # the cart idles for 2 s: the timer index finds it and the abandoned-cart trigger goes out
        run.wait(
            lambda: (
                (
                    registry.get_sample_value(
                        "omnipipe_nba_triggers_total", {"action": "abandoned_cart", "channel": "EMAIL"}
                    )
                    or 0
                )
                >= 1
            )
        )
        # the catalogue says SKU-9 is back: C viewed it
        producer.produce(
            cat["stock"].name,
            CODEC.encode(
                STOCK,
                {
                    "feed_id": "f-1",
                    "sku": "SKU-9",
                    "category": "toys",
                    "in_stock": True,
                    "changed_at": int(time.time() * 1000),
                },
            ),
        )
        assert producer.flush(10) == 0
        run.wait(
            lambda: (
                (
                    registry.get_sample_value(
                        "omnipipe_nba_triggers_total", {"action": "back_in_stock", "channel": "EMAIL"}
                    )
                    or 0
                )
                >= 1
            )
        )
        # D buys: the pending abandoned-cart trigger is withdrawn
        publish(
            _event(
                "cust:D",
                "purchase",
                int(time.time() * 1000),
                8,
                amount=40.0,
                items=[{"sku": "SKU-3", "category": "toys", "quantity": 1, "unit_price": 40.0}],
            )
        )
        run.wait(
            lambda: (
                (
                    registry.get_sample_value(
                        "omnipipe_nba_cancellations_total", {"action": "abandoned_cart", "cause": "purchase"}
                    )
                    or 0
                )
                >= 1
            )
        )
        # new weights replace the priors without a restart; a broken document is refused and changes nothing
        models = cat["nba_models"].name
        producer.produce(
            models,
            json.dumps(
                {
                    "version": "v2",
                    "models": {"store_cross_sell/EMAIL": {"intercept": 1.5, "weights": {"orders": 0.2}}},
                }
            ).encode(),
            b"models",
        )
        producer.produce(
            models,
            json.dumps(
                {"version": "v3", "models": {"store_cross_sell/EMAIL": {"intercept": "high"}}}
            ).encode(),
            b"models",
        )
        assert producer.flush(10) == 0
        run.wait(
            lambda: registry.get_sample_value("omnipipe_nba_model_updates_total", {"result": "rejected"}) == 1
        )
        assert loop.models is not None and loop.models.current.version == "v2"
        assert registry.get_sample_value("omnipipe_nba_suppressions_total", {"reason": "no_consent"}) == 1
        run.wait(lambda: not loop.engine.unsent())

    sent = _triggers(client, cat)
    by_action = {r["action"]: (k, r) for k, r in sent if r["cancels"] is None}
    assert set(by_action) == {"store_cross_sell", "abandoned_cart", "back_in_stock"}
    key, cross = by_action["store_cross_sell"]
    assert key == b"cust:A" and cross["profile_id"] == "cust:A" and cross["customer_id"] == "A"
    assert cross["recipient_ref"] == f"email:{2:064x}" and cross["offer"] == "category:shoes"
    assert (
        cross["idempotency_key"].startswith("store_cross_sell:")
        and cross["send_after"] == cross["created_at"]
    )
    assert cross["expires_at"] == now - 4000 + 3 * 86_400_000
    assert "identified == True" in cross["reasons"] and set(cross["score_parts"]) == {
        "propensity",
        "value",
        "channel_cost",
    }
    cart = by_action["abandoned_cart"][1]
    assert [i["sku"] for i in cart["items"]] == ["SKU-3"] and cart["items"][0]["unit_price"] == 40.0
    assert cart["source_event_time"] == now - 1000 + 2000  # the timer's due time
    assert by_action["back_in_stock"][1]["items"][0]["sku"] == "SKU-9"
    cancels = [r for _k, r in sent if r["cancels"] is not None]
    assert [c["cancels"] for c in cancels] == [cart["idempotency_key"]]
    assert cancels[0]["idempotency_key"] == cart["idempotency_key"] + ":cancel"
    assert not any(r["profile_id"] == "cust:B" for _k, r in sent)

    # the timer and viewed indexes travel on the changelog: a new owner rebuilt from it has them
    local = PartitionStore(tmp_path / "state" / "profile")
    rebuilt = PartitionStore(tmp_path / "rebuilt")
    try:
        restore_partitions(rebuilt, client, cat["profile_changelog"].name, range(2))
        for prefix in (TIMER_PREFIX, VIEWED_PREFIX):
            ours = [k for p in range(2) for k, _v in local.items(p, prefix)]
            assert ours == [k for p in range(2) for k, _v in rebuilt.items(p, prefix)]
            assert ours  # silence and browse timers armed; C and D viewed products
    finally:
        local.close()
        rebuilt.close()

    # a restarted loop restores the state and the timer index, and sends nothing twice
    again, _registry = _loop(broker, cat, tmp_path, monkeypatch, tag)
    with Running(again) as run:
        run.wait(again.assigned.is_set)
        time.sleep(3)
        record = again.record("cust:D")
        assert record is not None and record.state is not None and len(record.state.contacts) == 1
    assert len(_triggers(client, cat)) == len(sent)
