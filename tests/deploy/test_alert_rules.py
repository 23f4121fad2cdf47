"""The alert rules load in Prometheus, and every alert is shown to fire and to stay silent.

``promtool`` (Debian's ``prometheus`` package; ``.ci/run`` installs it) checks the rules and runs
the unit tests in ``deploy/prometheus/tests/``. This module also checks those tests cover every
alert: one case where the alert fires and one where it stays silent on a healthy series of the
very metrics its expression reads, all with names and labels the workers really export.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_monitoring import exported_scrape

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))
_SERIES = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"([^"]*)"')
_NAME = re.compile(r"\b(omnipipe_[a-z0-9_]+|up)\b(?!\s*\()")
#: labels Prometheus adds (job, instance) or whose values are open (topic and partition of the lag gauge)
_FREE_LABELS = {"job", "instance", "topic", "partition"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install the `prometheus` Debian package "
                    "(apt-get install -y prometheus); .ci/run installs it in CI")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=120, check=False)


@dataclass(frozen=True)
class Case:
    file: str
    name: str
    alert: str
    fires: bool
    series: frozenset[str]  # metric names of the case's input series


def _alerts() -> dict[str, str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"] if "alert" in r}


def _tests(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def _cases() -> list[Case]:
    cases = []
    for path in TEST_FILES:
        for test in _tests(path)["tests"]:
            names = frozenset(_parse_series(s["series"])[0] for s in test.get("input_series", []))
            for check in test.get("alert_rule_test", []):
                assert "exp_alerts" in check, f"{path.name} {test['name']!r}: say exp_alerts (or [])"
                cases.append(Case(path.name, test["name"], check["alertname"], bool(check["exp_alerts"]),
                                  names))
    return cases


def _parse_series(series: str) -> tuple[str, dict[str, str]]:
    match = _SERIES.match(series)
    assert match, f"cannot read series {series!r}"
    return match.group(1), dict(_LABEL.findall(match.group(2) or ""))


def test_there_are_rule_tests_and_they_load_the_real_rules() -> None:
    assert TEST_FILES, "deploy/prometheus/tests/ has no promtool test file"
    for path in TEST_FILES:
        files = [(path.parent / f).resolve() for f in _tests(path)["rule_files"]]
        assert files == [ALERTS], f"{path.name} must test ../alerts.yml, not a copy"


def test_promtool_accepts_the_rules() -> None:
    result = _run("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_tests_pass() -> None:
    result = _run("test", "rules", *map(str, TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    alerts = _alerts()
    cases = _cases()
    unknown = {c.alert for c in cases} - set(alerts)
    assert not unknown, f"cases for alerts that do not exist: {sorted(unknown)}"
    no_fire = sorted(a for a in alerts if not any(c.alert == a and c.fires for c in cases))
    no_silence = sorted(a for a in alerts if not any(c.alert == a and not c.fires for c in cases))
    assert not no_fire, f"alerts without a case that fires: {no_fire}"
    assert not no_silence, f"alerts without a case that stays silent: {no_silence}"


def test_every_case_feeds_the_metrics_its_alert_reads() -> None:
    """A silent case without the alert's input data would be silent whatever the rule says."""
    alerts = _alerts()
    for case in _cases():
        read = set(_NAME.findall(alerts[case.alert]))
        assert read, f"{case.alert} reads no metric"
        missing = read - case.series
        assert not missing, f"{case.file} {case.name!r}: no input series for {sorted(missing)}"


def test_case_series_are_named_and_labelled_as_the_workers_export_them() -> None:
    samples = exported_scrape().samples
    for path in TEST_FILES:
        for test in _tests(path)["tests"]:
            for entry in test.get("input_series", []):
                name, labels = _parse_series(entry["series"])
                if name == "up":
                    continue
                assert name in samples, f"{path.name} {test['name']!r}: {name} is not exported"
                exported: dict[str, set[str]] = {}
                for key in samples[name]:
                    for k, v in key:
                        exported.setdefault(k, set()).add(v)
                for label, value in labels.items():
                    if label in {"job", "instance"}:
                        continue
                    assert label in exported, f"{path.name} {test['name']!r}: {name} has no label {label}"
                    if label not in _FREE_LABELS:
                        assert value in exported[label], (
                            f"{path.name} {test['name']!r}: {name}{{{label}={value!r}}} is never exported")
