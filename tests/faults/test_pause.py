"""Telling the paused worker's writes apart (pipeline/faults/pause.py)."""

from __future__ import annotations

from pipeline.faults.pause import Window, Write, classify, parse_commit_header, paused_writers
from pipeline.state.changelog import commit_header

STOP, CONT, AFTER, BY = 100_000, 115_000, 116_000, 116_200
WINDOW = Window(STOP, CONT, AFTER, BY)
CL, TRIG = "omnipipe-profile-state-changelog", "triggers.email"
RESUMED = {(CL, 0): 50, (TRIG, 0): 80}


def test_the_commit_header_the_committer_writes_is_read_back() -> None:
    assert parse_commit_header(commit_header("ab12", 7)) == ("ab12", 7)
    assert parse_commit_header({"omnipipe.commit": b"w:x:3"}) == ("w:x", 3)
    assert parse_commit_header([("other", b"1")]) == (None, None)
    assert parse_commit_header(None) == (None, None)


def test_the_paused_writers_are_those_silent_while_the_worker_was_stopped() -> None:
    marks = [("paused-id", STOP - 2_000), ("other-id", STOP - 1_000), ("other-id", STOP + 5_000),
             ("old-run", STOP - 60_000),  # long before the stop: some earlier run, not the paused one
             ("paused-id", CONT + 500),  # it writes again once woken: still the paused one
             ("restarted", STOP + 3_000)]
    assert paused_writers(marks, STOP, CONT) == {"paused-id"}


def test_a_paused_writer_s_changelog_record_after_sigcont_is_a_leak_until_its_reassignment() -> None:
    writes = [
        Write(CL, 0, 49, CONT + 100, "paused-id", 9),  # before the offsets taken while stopped: not a leak
        Write(CL, 0, 50, CONT + 100, "paused-id", 10),  # woken, writes before it is given partitions: leak
        Write(CL, 0, 51, CONT + 200, "other-id", 4),  # the new owner's
        Write(CL, 0, 52, AFTER + 100, "paused-id", 11),  # between the two looks at the group: ambiguous
        Write(CL, 0, 53, BY + 1, "paused-id", 12),  # after its new assignment: legitimate
    ]
    found = classify(writes, RESUMED, {"paused-id"}, WINDOW)
    assert [w.offset for w in found.leaked] == [50]
    assert [w.offset for w in found.ambiguous] == [52]
    assert found.unattributed == []


def test_a_record_created_before_sigstop_and_appended_after_sigcont_is_the_paused_worker_s() -> None:
    """Its producer's queue, sent once woken: on any topic, header or not, even after its re-assignment."""
    writes = [Write(TRIG, 0, 79, STOP - 10), Write(TRIG, 0, 80, STOP - 10), Write(TRIG, 0, 81, BY + 5_000)]
    found = classify(writes, RESUMED, set(), WINDOW)
    assert [w.offset for w in found.leaked] == [80]
    assert found.unattributed == []  # offset 81: created after the re-assignment, nobody's to judge


def test_records_without_a_writer_in_the_zombie_window_are_counted_not_judged() -> None:
    writes = [Write(TRIG, 0, 85, CONT + 300), Write(TRIG, 0, 86, AFTER + 50)]
    found = classify(writes, RESUMED, {"paused-id"}, WINDOW)
    assert found.leaked == [] and [w.offset for w in found.unattributed] == [85]
    assert found.by_topic("unattributed") == {TRIG: 1}


def test_where_names_each_partition_and_offset_range_of_the_leaks() -> None:
    writes = [Write(CL, 0, 50, CONT + 1, "paused-id", 10), Write(CL, 0, 57, CONT + 2, "paused-id", 10),
              Write(CL, 1, 9, CONT + 3, "paused-id", 10)]
    found = classify(writes, {(CL, 0): 50, (CL, 1): 0}, {"paused-id"}, WINDOW)
    assert found.where() == f"{CL}[0] 2 at 50..57; {CL}[1] 1 at 9..9"
