"""The demo's customer-360 line compares like with like: profile events = simulated + sender reports."""

from __future__ import annotations

from typing import Any

from pipeline.runtime.demo import CONTROL, ChannelEvents, compare_events, format_event_comparison


def _body(total: int, **channels: int) -> dict[str, Any]:
    return {"events": total, "channels": {ch: {"events": n, "sent": 0} for ch, n in channels.items()}}


def test_sender_reports_explain_the_difference_to_the_truth() -> None:
    # the case `make demo` printed as "75 events ... the truth says 66 events"
    body = _body(75, WEB=30, APP=12, POS=4, EMAIL=20, SMS=6)  # 3 without a channel: consent changes
    simulated = {"WEB": 30, "APP": 12, "POS": 4, "EMAIL": 14, "SMS": 3, CONTROL: 3}
    reports = {"EMAIL": 6, "SMS": 3}
    cmp = compare_events(body, simulated, reports)
    assert (cmp.profile, cmp.simulated, cmp.sender_reports, cmp.unexplained) == (75, 66, 9, 0)
    assert cmp.rows == (
        ChannelEvents("APP", 12, 12, 0), ChannelEvents("EMAIL", 20, 14, 6), ChannelEvents("POS", 4, 4, 0),
        ChannelEvents("SMS", 6, 3, 3), ChannelEvents("WEB", 30, 30, 0), ChannelEvents(CONTROL, 3, 3, 0),
    )
    line = format_event_comparison(cmp)
    assert line.startswith("75 events in the profile = 66 the simulator published (the truth counts these) "
                           "+ 9 reports the simulated senders sent back")
    assert "EMAIL 20=14+6" in line and "WEB 30=30," in line and "control 3=3" in line
    assert "unexplained" not in line


def test_what_neither_source_explains_is_shown_per_channel() -> None:
    body = _body(10, APP=7, PUSH=3)
    cmp = compare_events(body, {"APP": 8}, {"PUSH": 2})
    assert cmp.unexplained == 0  # the two channels cancel out in the total...
    assert [r.unexplained for r in cmp.rows] == [-1, 1]  # ...so they are shown per channel
    line = format_event_comparison(cmp)
    assert "APP 7=8 (-1)" in line and "PUSH 3=0+2 (+1)" in line


def test_a_channel_only_one_side_knows_is_listed() -> None:
    cmp = compare_events(_body(2, WEB=2), {CONTROL: 1}, {})
    assert cmp.rows == (ChannelEvents("WEB", 2, 0, 0), ChannelEvents(CONTROL, 0, 1, 0))
    assert format_event_comparison(cmp).startswith("2 events in the profile = 1 the simulator published")
    assert "+1 unexplained" in format_event_comparison(cmp)


def test_the_worker_inherits_the_broker_s_quirks(tmp_path: Any, monkeypatch: Any) -> None:
    """The demo's worker gets OMNIPIPE_BROKER_QUIRKS with OMNIPIPE_LOCAL_BROKER: Tansu's workarounds on
    Tansu only, whatever the parent's environment says."""
    from pipeline.runtime.demo import _worker_env
    from pipeline.settings import Settings, load_settings

    monkeypatch.setenv("OMNIPIPE_BROKER_QUIRKS", "tansu")  # a stale value in the parent's environment
    base = load_settings()
    for tansu in (True, False):
        settings = base.with_bootstrap("127.0.0.1:9", tmp_path, tansu=tansu)
        env = _worker_env(settings, 1, 2)
        assert env["OMNIPIPE_LOCAL_BROKER"] == "1"
        assert env["OMNIPIPE_BROKER_QUIRKS"] == ("tansu" if tansu else "none")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        worker = Settings()
        assert worker.tansu is tansu and worker.local_broker
