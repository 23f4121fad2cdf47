"""Alert rules and dashboards may only use metrics and labels the workers really export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from pipeline.metrics.identity import IdentityMetrics
from pipeline.metrics.ingest import IngestMetrics
from pipeline.metrics.profile import ProfileMetrics
from pipeline.metrics.scrape import parse
from pipeline.topology.catalogue import CHANNELS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_METRIC = re.compile(r"\b(omnipipe_[a-z0-9_]+)\b")
_BY = re.compile(r"\bby \(([^)]*)\)")
_FUNCS_AND_LABELS = {"le", "instance", "job"}


def _exported() -> tuple[set[str], set[str]]:
    registry = CollectorRegistry()
    IngestMetrics(registry, CHANNELS)
    IdentityMetrics(registry)
    ProfileMetrics(registry)
    scraped = parse(generate_latest(registry).decode())
    names = set(scraped.samples)
    labels = {k for series in scraped.samples.values() for key in series for k, _ in key}
    return names, labels


def _exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    for board in sorted((DEPLOY / "grafana").glob("*.json")):
        dash = json.loads(board.read_text())
        exprs += [t["expr"] for p in dash["panels"] for t in p["targets"]]
    return exprs


def test_every_referenced_metric_is_exported() -> None:
    names, _ = _exported()
    used = {m for e in _exprs() for m in _METRIC.findall(e)}
    assert used, "the rules and dashboard must use Omnipipe metrics"
    assert used <= names, f"not exported: {sorted(used - names)}"


def test_every_grouping_label_exists() -> None:
    _, labels = _exported()
    grouped = {lab.strip() for e in _exprs() for group in _BY.findall(e) for lab in group.split(",")}
    assert grouped <= labels | _FUNCS_AND_LABELS, sorted(grouped - labels - _FUNCS_AND_LABELS)


def test_every_alert_has_a_runbook_section() -> None:
    runbook = (DEPLOY / "README.md").read_text().lower()
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            anchor = rule["annotations"]["runbook"].split("#", 1)[1]
            assert f"### {rule['alert'].lower()}" in runbook and anchor == rule["alert"].lower()
