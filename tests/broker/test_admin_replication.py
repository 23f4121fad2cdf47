"""``ensure_topics``' replication-factor override (the 3-broker fault and test clusters)."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest

import pipeline.broker.admin as admin
from pipeline.topology.catalogue import load_catalogue


class _Admin:
    created: list[Any] = []

    def __init__(self, conf: dict[str, Any]) -> None:
        pass

    def create_topics(self, new: list[Any], request_timeout: float) -> dict[str, Future[None]]:
        _Admin.created = list(new)
        out: dict[str, Future[None]] = {}
        for topic in new:
            fut: Future[None] = Future()
            fut.set_result(None)
            out[topic.topic] = fut
        return out


class _Metadata:
    topics: dict[str, Any] = {}


@pytest.fixture
def fake_admin(monkeypatch: pytest.MonkeyPatch) -> type[_Admin]:
    monkeypatch.setattr(admin, "AdminClient", _Admin)
    monkeypatch.setattr(admin, "first_contact", lambda *_a, **_k: _Metadata())
    return _Admin


def test_every_topic_gets_the_override(fake_admin: type[_Admin]) -> None:
    catalogue = load_catalogue()
    result = admin.ensure_topics({"bootstrap.servers": "x:1"}, catalogue, replication_factor=3)
    assert set(result.values()) == {"created"} and len(result) == len(list(catalogue))
    assert {t.replication_factor for t in fake_admin.created} == {3}


def test_without_it_each_topic_keeps_its_declared_factor(fake_admin: type[_Admin]) -> None:
    catalogue = load_catalogue()
    admin.ensure_topics({"bootstrap.servers": "x:1"}, catalogue)
    assert {t.topic: t.replication_factor for t in fake_admin.created} == {
        s.name: s.replication_factor for s in catalogue}
