"""Alert rules and dashboards may only use metrics and labels the workers really export."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Collection
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from pipeline.metrics.identity import IdentityMetrics
from pipeline.metrics.ingest import IngestMetrics
from pipeline.metrics.lag import LagMonitor, Watermarks
from pipeline.metrics.nba import NbaMetrics
from pipeline.metrics.profile import ProfileMetrics
from pipeline.metrics.scrape import Scrape, parse
from pipeline.nba.catalogue import load_action_catalogue
from pipeline.nba.decide import NbaCounts
from pipeline.runtime.status import StageStatus
from pipeline.topology.catalogue import CHANNELS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_METRIC = re.compile(r"\b(omnipipe_[a-z0-9_]+)\b")
_BY = re.compile(r"\bby \(([^)]*)\)")
_SELECTOR = re.compile(r"\b(omnipipe_[a-z0-9_]+)\{([^}]*)\}")
_MATCHER = re.compile(r'([a-z_][a-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_FUNCS_AND_LABELS = {"le", "instance", "job"}


class _OneRecordBehind:
    """Offsets of a lag reading: every owned partition one record behind."""

    def committed(self, group_id: str, partitions: Collection[tuple[str, int]]
                  ) -> dict[tuple[str, int], int | None]:
        return {tp: 0 for tp in partitions}

    def watermarks(self, partitions: Collection[tuple[str, int]]) -> dict[tuple[str, int], Watermarks]:
        return {tp: Watermarks(0, 1) for tp in partitions}

    def close(self) -> None:
        pass


def _lag_series(registry: CollectorRegistry) -> None:
    """The lag gauge as a worker serves it, one owned partition per stage."""
    statuses = {}
    for stage in ("ingest", "identity", "profile"):
        status = statuses[stage] = StageStatus(stage)
        status.started(f"omnipipe-{stage}")
        status.assigned_to(frozenset({(f"{stage}-input", 0)}))
    LagMonitor(registry, statuses, _OneRecordBehind).refresh()


def exported_scrape() -> Scrape:
    """Every metric a worker exports, each label value that exists from the start (or one of each)."""
    registry = CollectorRegistry()
    IngestMetrics(registry, CHANNELS)
    IdentityMetrics(registry)
    ProfileMetrics(registry)
    actions = load_action_catalogue()
    nba = NbaMetrics(registry, actions)
    # the two NBA series whose labels are only known once they happen: one of each, as a decider counts them
    action = next(a for a in actions.actions.values() if a.cancel_on)
    nba.add(NbaCounts(deferred=Counter({action.channels[0]: 1}),
                      cancellations=Counter({(action.name, min(action.cancel_on)): 1})))
    _lag_series(registry)
    return parse(generate_latest(registry).decode())


def _exported() -> tuple[set[str], set[str]]:
    scraped = exported_scrape()
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


def test_every_label_matcher_names_an_exported_label_and_value() -> None:
    samples = exported_scrape().samples
    for expr in _exprs():
        for metric, matchers in _SELECTOR.findall(expr):
            exported: dict[str, set[str]] = {}
            for key in samples.get(metric, {}):
                for k, v in key:
                    exported.setdefault(k, set()).add(v)
            for label, op, value in _MATCHER.findall(matchers):
                assert label in exported, f"{metric} has no label {label!r}: {expr}"
                if op == "=":
                    assert value in exported[label], f"{metric}: {label}={value!r} never exported: {expr}"


def test_every_nba_metric_is_on_the_dashboard() -> None:
    names, _ = _exported()
    dash = json.loads((DEPLOY / "grafana" / "omnipipe-nba.json").read_text())
    used = {m for p in dash["panels"] for t in p["targets"] for m in _METRIC.findall(t["expr"])}
    nba = {n for n in names
           if n.startswith("omnipipe_nba_") and not n.endswith(("_created", "_sum", "_count"))}
    assert nba <= used, f"not on the NBA dashboard: {sorted(nba - used)}"


def test_every_alert_has_a_runbook_section() -> None:
    runbook = (DEPLOY / "README.md").read_text().lower()
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            anchor = rule["annotations"]["runbook"].split("#", 1)[1]
            assert f"### {rule['alert'].lower()}" in runbook and anchor == rule["alert"].lower()
