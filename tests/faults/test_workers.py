from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipeline.broker.offset_gaps import OffsetGapGuard
from pipeline.faults.workers import fetch_jumps
from tests.broker.test_offset_gaps import Seeks, msgs


def test_fetch_jumps_counts_what_the_guard_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The scenarios count jumps from worker logs: the counter must match the guard's own words."""
    guard = OffsetGapGuard(lambda _outcome: None, retries=1)
    seeks = Seeks()
    with caplog.at_level(logging.WARNING, logger="pipeline.broker.offset_gaps"):
        guard.filter(seeks, msgs(0, 1))  # type: ignore[arg-type]
        guard.filter(seeks, msgs(0, 5))  # type: ignore[arg-type]  # a jump: re-read
        guard.filter(seeks, msgs(0, 5))  # type: ignore[arg-type]  # still there: given up
        guard.filter(seeks, msgs(1, 0, 9))  # type: ignore[arg-type]  # another jump: re-read
    (tmp_path / "w1.log").write_text(caplog.text)
    (tmp_path / "w2.log").write_text("=== start 1 ===\nnothing to see\n")
    (tmp_path / "notes.txt").write_text(caplog.text)  # not a worker log
    assert fetch_jumps(tmp_path) == (2, 1)
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "w1.log").write_text(caplog.text)  # a sub-run's worker log counts
    wal = tmp_path / "control" / "state-w1" / "profile"
    wal.mkdir(parents=True)
    (wal / "000008.log").write_text(caplog.text)  # RocksDB's write-ahead log does not
    assert fetch_jumps(tmp_path) == (4, 2)
