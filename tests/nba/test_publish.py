"""``omnipipe models publish``: a bad document is refused before any broker; a good one lands on the topic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.broker.admin import ensure_topics
from pipeline.broker.embedded import EmbeddedBroker
from pipeline.broker.reader import iter_topic
from pipeline.cli import main
from pipeline.errors import ExitCode
from pipeline.topology.catalogue import load_catalogue

GOOD = {"version": "2026-11-23-a",
        "models": {"welcome/EMAIL": {"intercept": -1.0, "weights": {"events": 0.02}}}}


def test_check_only_names_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    good, bad = tmp_path / "good.json", tmp_path / "bad.yaml"
    good.write_text(json.dumps(GOOD))
    bad.write_text("version: x\nmodels: {geo_offer/EMAIL: {intercept: 1}}\n")
    assert main(["models", "publish", str(good), "--check"]) == 0
    assert "2026-11-23-a are valid" in capsys.readouterr().out
    assert main(["models", "publish", str(bad), "--check"]) == ExitCode.CONFIG
    assert "geo_offer/EMAIL: no such action/channel pair" in capsys.readouterr().err
    assert main(["models", "publish", str(tmp_path / "missing.json")]) == ExitCode.CONFIG
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.broker
def test_a_valid_document_is_published_on_the_models_topic(broker: EmbeddedBroker, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
    monkeypatch.setenv("OMNIPIPE_LOCAL_BROKER", "1")
    monkeypatch.setenv("OMNIPIPE_PII_HASH_KEY", "k" * 32)
    client = {"bootstrap.servers": broker.bootstrap_servers}
    ensure_topics(client, load_catalogue())
    doc = tmp_path / "models.json"
    doc.write_text(json.dumps(GOOD))
    assert main(["models", "publish", str(doc)]) == 0
    records = list(iter_topic(client, "nba.models", idle_s=1.0))
    assert json.loads(records[-1].value or b"") == GOOD and records[-1].key == b"propensity"
