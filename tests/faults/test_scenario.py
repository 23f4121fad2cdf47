"""A scenario's verdict (pipeline/faults/scenario.py) and the suite's command line (suite.py)."""

from __future__ import annotations

import argparse

import pytest

from pipeline.faults.scenario import Result
from pipeline.faults.suite import SCENARIOS, add_arguments, run_suite


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
