"""A scenario's verdict (pipeline/faults/scenario.py) and the suite's command line (suite.py)."""

from __future__ import annotations

import argparse

import pytest

from pipeline.faults import substrate
from pipeline.faults.scenario import Result
from pipeline.faults.suite import SCENARIOS, add_arguments, chosen_scenarios, run_suite
from pipeline.faults.workers import worker_env


def test_a_result_passes_only_with_checks_all_held() -> None:
    r = Result("x")
    assert not r.passed  # no check made: nothing was proved
    r.check("one", True)
    assert r.passed
    r.check("two", False)
    assert not r.passed


def test_the_rendering_names_each_check_and_figure() -> None:
    r = Result("crash")
    r.figures["events"] = 200_000
    r.check("0 missing", True)
    r.check("0 extra", False)
    text = r.finish().render()
    assert text.startswith("FAIL crash (")
    assert "    events: 200,000" in text and "[ok] 0 missing" in text and "[FAILED] 0 extra" in text


def test_an_unknown_scenario_is_refused_naming_the_known_ones() -> None:
    p = argparse.ArgumentParser()
    add_arguments(p)
    with pytest.raises(SystemExit) as err:
        run_suite(p.parse_args(["--only", "crash,meteor"]))
    assert "meteor" in str(err.value) and all(s in str(err.value) for s in SCENARIOS)


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_the_default_run_is_every_scenario_on_apache_kafka() -> None:
    args = _args()
    assert args.broker == "kafka"
    assert chosen_scenarios(args.only, args.broker) == list(SCENARIOS)
    assert {"broker-bounce", "pause"} <= set(SCENARIOS)


def test_tansu_runs_all_but_the_scenarios_that_restart_brokers() -> None:
    args = _args("--broker", "tansu")
    assert chosen_scenarios(args.only, args.broker) == [s for s in SCENARIOS if s != "broker-bounce"]
    with pytest.raises(SystemExit) as err:
        chosen_scenarios("crash,broker-bounce", "tansu")
    assert "broker-bounce" in str(err.value) and "--broker kafka" in str(err.value)


def test_a_broker_that_cannot_run_stops_the_suite_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.broker.kafka_process as kp

    monkeypatch.setattr(kp, "unavailable_reason", lambda: "no java on PATH (Java 17+ is needed)")
    with pytest.raises(SystemExit) as err:
        run_suite(_args("--only", "crash"))
    text = str(err.value)
    assert "no java on PATH" in text and "--broker tansu" in text and "\n" not in text


def test_workers_get_the_quirks_of_the_broker_they_run_on() -> None:
    try:
        substrate.use("tansu")
        assert worker_env("127.0.0.1:1", "k")["OMNIPIPE_BROKER_QUIRKS"] == "tansu"
        substrate.use("kafka")
        env = worker_env("127.0.0.1:1", "k")
        assert env["OMNIPIPE_BROKER_QUIRKS"] == "none" and env["OMNIPIPE_LOCAL_BROKER"] == "1"
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:1"
    finally:
        substrate.use("kafka")
    with pytest.raises(ValueError):
        substrate.use("redpanda")
