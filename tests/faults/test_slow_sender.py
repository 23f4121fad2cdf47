"""The slow-sender scenario's arithmetic: which window a moment falls in, and what each window holds."""

from __future__ import annotations

import pytest

from pipeline.faults.slow_sender import Measured, p99


def _run() -> Measured:
    m = Measured(stalled=True, start_s=30.0, end_s=150.0)
    m.lag = [(0.0, 10), (29.9, 40), (30.0, 900), (149.9, 50), (150.0, 3000)]
    m.received = {"SMS": [(1.0, 100.0)] * 60 + [(40.0, 500.0)] * 240 + [(160.0, 9.0)] * 10,
                  "EMAIL": [(2.0, 1.0)] * 30 + [(100.0, 5.0)] * 60}
    return m


def test_windows_are_half_open_at_the_stall() -> None:
    m = _run()
    assert [m.window(s) for s in (0.0, 29.99, 30.0, 149.99, 150.0)] == [
        "before", "before", "during", "during", "after"]


def test_peak_lag_and_delay_are_taken_per_window() -> None:
    m = _run()
    assert (m.peak_lag("before"), m.peak_lag("during"), m.peak_lag("after")) == (40, 900, 3000)
    assert m.delay_p99("SMS", "before") == pytest.approx(100.0)
    assert m.delay_p99("SMS", "during") == pytest.approx(500.0)
    assert m.delay_p99("SMS", "after") == pytest.approx(9.0)


def test_rates_divide_by_each_windows_length() -> None:
    m = _run()
    assert m.rate("SMS", "before") == pytest.approx(60 / 30)
    assert m.rate("SMS", "during") == pytest.approx(240 / 120)
    assert m.rate("EMAIL", "during") == pytest.approx(60 / 120)


def test_p99_of_a_spread() -> None:
    assert p99([]) == 0.0
    assert p99([7.0]) == 7.0
    values = [float(v) for v in range(1, 1001)]
    assert 985 <= p99(values) <= 995
