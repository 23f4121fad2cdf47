"""Contact policy (pipeline/nba/policy.py): quiet hours across zones and DST, holdout, caps, cooldown basis.

Pure functions over the shipped catalogue's policy (quiet hours 21:00-08:00 for
PUSH and SMS, default zone Europe/London); variants via ``dataclasses.replace``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.nba.catalogue import Caps, Policy, load_action_catalogue
from pipeline.nba.policy import (
    CANCELLED,
    CLICKED,
    DAY_MS,
    DELIVERED,
    HOLDOUT,
    OPENED,
    WEEK_MS,
    cap_blocked,
    in_holdout,
    is_quiet,
    last_decided,
    next_allowed,
)
from pipeline.profile.state import Contact

POLICY = load_action_catalogue().policy
MIN_MS = 60_000
HOUR_MS = 60 * MIN_MS

ZONES = (
    "Europe/London", "Europe/Paris", "America/New_York", "America/Los_Angeles", "America/Sao_Paulo",
    "Australia/Sydney", "Australia/Lord_Howe", "Asia/Kolkata", "Asia/Kathmandu", "Pacific/Chatham",
    "Pacific/Auckland", "UTC", "Africa/Casablanca", "America/St_Johns",
)
FIRST_YEAR, LAST_YEAR = 2005, 2035  # whole-minute UTC offsets only (no LMT), several DST rule changes


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, tz: str = "UTC") -> int:
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def local(t_ms: int, tz: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(t_ms / 1000, tz=ZoneInfo(tz))


def local_minute(t_ms: int, tz: str) -> int:
    t = local(t_ms, tz)
    return t.hour * 60 + t.minute


@cache
def transitions() -> tuple[tuple[str, int], ...]:
    """(zone, a UTC midnight within a day of an offset change) for every zone and year of the test range."""
    out = []
    start = ms(FIRST_YEAR, 1, 1)
    days = (dt.date(LAST_YEAR + 1, 1, 1) - dt.date(FIRST_YEAR, 1, 1)).days
    for name in ZONES:
        z = ZoneInfo(name)
        prev = None
        for d in range(days):
            t = start + d * DAY_MS
            off = dt.datetime.fromtimestamp(t / 1000, tz=z).utcoffset()
            if prev is not None and off != prev:
                out.append((name, t))
            prev = off
    return tuple(out)


def test_the_test_range_has_dst_changes_in_the_zones_that_observe_dst() -> None:
    seen = {name for name, _t in transitions()}
    assert {"Europe/London", "America/Sao_Paulo", "Australia/Lord_Howe", "Pacific/Chatham",
            "Africa/Casablanca", "America/St_Johns"} <= seen
    assert not seen & {"UTC", "Asia/Kolkata", "Asia/Kathmandu"}


anywhere = st.tuples(st.sampled_from(ZONES),
                     st.integers(ms(FIRST_YEAR, 1, 1), ms(LAST_YEAR, 12, 31)))
near_dst = st.builds(lambda zt, offset: (zt[0], zt[1] + offset),
                     st.sampled_from(transitions()), st.integers(-2 * DAY_MS, 2 * DAY_MS))
instants = st.one_of(anywhere, near_dst)


# ------------------------------------------------------------------------------------------ next_allowed
@settings(max_examples=300)
@given(instants)
def test_next_allowed_is_the_first_allowed_instant_at_or_after_the_input(zt: tuple[str, int]) -> None:
    tz, t = zt
    out = next_allowed(t, tz, POLICY)
    assert out >= t
    assert 8 * 60 <= local_minute(out, tz) < 21 * 60, local(out, tz)
    assert not is_quiet(out, tz, POLICY)
    assert next_allowed(out, tz, POLICY) == out
    if not is_quiet(t, tz, POLICY):
        assert out == t
        return
    assert out - t < 14 * HOUR_MS
    # Quiet status only changes on local minute boundaries, which are UTC minute boundaries for these zones
    # (whole-minute offsets): every boundary strictly between input and result must still be quiet.
    m = (t // MIN_MS + 1) * MIN_MS
    while m < out:
        assert is_quiet(m, tz, POLICY), f"{local(m, tz)} is allowed but next_allowed gave {local(out, tz)}"
        m += MIN_MS
    assert local(out, tz).second == 0 and out % 1000 == 0


@given(instants)
def test_next_allowed_ends_at_local_eight_oclock(zt: tuple[str, int]) -> None:
    tz, t = zt
    out = next_allowed(t, tz, POLICY)
    if out != t:
        end = local(out, tz)
        assert (end.hour, end.minute, end.second) == (8, 0, 0)
        start = local(t, tz)
        expected_day = start.date() + dt.timedelta(days=1 if start.hour >= 21 else 0)
        assert end.date() == expected_day


@pytest.mark.parametrize(("evening", "morning"), [
    # spring forward (2024-03-31 01:00 GMT -> 02:00 BST): the UTC instant moves, the local 08:00 does not
    (ms(2024, 3, 30, 22, 30), ms(2024, 3, 31, 7, 0)),
    # fall back (2024-10-27 02:00 BST -> 01:00 GMT)
    (ms(2024, 10, 26, 21, 30), ms(2024, 10, 27, 8, 0)),
])
def test_london_evening_before_a_dst_change_goes_to_eight_next_morning(evening: int, morning: int) -> None:
    tz = "Europe/London"
    assert (local(evening, tz).hour, local(evening, tz).minute) == (22, 30)
    assert next_allowed(evening, tz, POLICY) == morning
    assert (local(morning, tz).hour, local(morning, tz).minute) == (8, 0)
    assert local(morning, tz).date() == local(evening, tz).date() + dt.timedelta(days=1)


@pytest.mark.parametrize("tz", ["Europe/London", "America/New_York", "Asia/Kathmandu", "Pacific/Chatham"])
def test_early_morning_goes_to_eight_the_same_day(tz: str) -> None:
    assert next_allowed(ms(2025, 7, 14, 6, 0, tz), tz, POLICY) == ms(2025, 7, 14, 8, 0, tz)
    assert next_allowed(ms(2025, 7, 14, 0, 0, tz), tz, POLICY) == ms(2025, 7, 14, 8, 0, tz)
    assert next_allowed(ms(2025, 7, 14, 7, 59, tz) + 59_999, tz, POLICY) == ms(2025, 7, 14, 8, 0, tz)
    assert next_allowed(ms(2025, 7, 14, 21, 0, tz), tz, POLICY) == ms(2025, 7, 15, 8, 0, tz)
    noon = ms(2025, 7, 14, 12, 0, tz) + 12_345
    assert next_allowed(noon, tz, POLICY) == noon


@pytest.mark.parametrize("tz", [None, "", "Mars/Olympus_Mons", "europe/london ", "../../etc/passwd"])
def test_unknown_or_missing_zone_falls_back_to_the_policy_default(tz: str | None) -> None:
    assert POLICY.default_timezone == "Europe/London"
    t = ms(2025, 1, 10, 22, 0)  # 22:00 in London, 23:00 in Paris, 17:00 in New York
    assert next_allowed(t, tz, POLICY) == ms(2025, 1, 11, 8, 0, "Europe/London")
    assert is_quiet(t, tz, POLICY)
    ny = replace(POLICY, default_timezone="America/New_York")
    assert next_allowed(t, tz, ny) == t
    assert not is_quiet(t, tz, ny)
    kolkata = replace(POLICY, default_timezone="Asia/Kolkata")  # 03:30 there
    assert next_allowed(t, tz, kolkata) == ms(2025, 1, 11, 8, 0, "Asia/Kolkata")


def test_a_zone_directory_name_falls_back_too() -> None:
    t = ms(2025, 1, 10, 22, 0)
    assert next_allowed(t, "Europe", POLICY) == ms(2025, 1, 11, 8, 0, "Europe/London")


# ------------------------------------------------------------------------------------------ is_quiet
@pytest.mark.parametrize(("hour", "minute", "quiet"), [
    (20, 59, False), (21, 0, True), (23, 59, True), (0, 0, True), (7, 59, True), (8, 0, False),
    (12, 0, False),
])
def test_is_quiet_boundaries(hour: int, minute: int, quiet: bool) -> None:
    for tz in ("Europe/London", "Australia/Lord_Howe", "America/St_Johns"):
        t = ms(2025, 3, 3, hour, minute, tz)
        assert is_quiet(t, tz, POLICY) is quiet
        assert is_quiet(t + 59_999, tz, POLICY) is quiet  # the whole local minute


def test_a_non_wrapping_window() -> None:
    noon = replace(POLICY, quiet_start_min=12 * 60, quiet_end_min=14 * 60)
    tz = "Europe/Paris"
    expect = {(11, 59): False, (12, 0): True, (13, 59): True, (14, 0): False, (22, 0): False, (3, 0): False}
    for (h, m), quiet in expect.items():
        assert is_quiet(ms(2025, 5, 5, h, m, tz), tz, noon) is quiet, (h, m)
    assert next_allowed(ms(2025, 5, 5, 12, 30, tz), tz, noon) == ms(2025, 5, 5, 14, 0, tz)
    assert next_allowed(ms(2025, 5, 5, 12, 0, tz), tz, noon) == ms(2025, 5, 5, 14, 0, tz)
    late = ms(2025, 5, 5, 22, 0, tz)
    assert next_allowed(late, tz, noon) == late


@given(instants)
def test_a_non_wrapping_window_property(zt: tuple[str, int]) -> None:
    tz, t = zt
    noon = replace(POLICY, quiet_start_min=12 * 60, quiet_end_min=14 * 60)
    out = next_allowed(t, tz, noon)
    assert out >= t
    assert not 12 * 60 <= local_minute(out, tz) < 14 * 60
    assert (out == t) is (not 12 * 60 <= local_minute(t, tz) < 14 * 60)
    if out != t:
        assert local(out, tz).date() == local(t, tz).date()
        assert (local(out, tz).hour, local(out, tz).minute) == (14, 0)


@pytest.mark.parametrize("minute", [0, 8 * 60, 21 * 60, 23 * 60 + 59])
def test_start_equal_to_end_is_never_quiet(minute: int) -> None:
    never = replace(POLICY, quiet_start_min=minute, quiet_end_min=minute)
    tz = "America/Los_Angeles"
    start = ms(2025, 11, 1, 0, 0, tz)
    for k in range(0, 2 * 24 * 60, 7):  # two days, including the fall-back on 2025-11-02
        t = start + k * MIN_MS
        assert not is_quiet(t, tz, never)
        assert next_allowed(t, tz, never) == t


def test_a_quiet_end_inside_a_dst_gap_gives_the_first_allowed_minute() -> None:
    # London 2024-03-31: 01:00 GMT jumps to 02:00 BST; quiet until 01:30 means allowed from 02:00 BST
    gap = replace(POLICY, quiet_start_min=21 * 60, quiet_end_min=90)
    t = ms(2024, 3, 31, 0, 45)
    assert is_quiet(t, "Europe/London", gap) and not is_quiet(ms(2024, 3, 31, 1, 0), "Europe/London", gap)
    assert next_allowed(t, "Europe/London", gap) == ms(2024, 3, 31, 1, 0)


def test_a_quiet_end_inside_a_repeated_hour_gives_the_first_allowed_minute() -> None:
    # London 2024-10-27: 02:00 BST falls back to 01:00 GMT, so 01:00-02:00 local happens twice
    fold = replace(POLICY, quiet_start_min=30, quiet_end_min=90)
    t = ms(2024, 10, 27, 1, 15)  # 01:15 GMT, the second pass, quiet
    assert is_quiet(t, "Europe/London", fold) and not is_quiet(ms(2024, 10, 27, 1, 30), "Europe/London", fold)
    assert next_allowed(t, "Europe/London", fold) == ms(2024, 10, 27, 1, 30)


# ------------------------------------------------------------------------------------------ holdout
IDS = [f"cust:{i:06d}" for i in range(20_000)]


def test_holdout_is_deterministic() -> None:
    first = [in_holdout(p, POLICY) for p in IDS[:2000]]
    again = [in_holdout(p, replace(POLICY)) for p in IDS[:2000]]
    assert first == again
    assert any(first)


def test_holdout_fraction_zero_is_never() -> None:
    none = replace(POLICY, holdout_fraction=0.0)
    assert not any(in_holdout(p, none) for p in IDS)


def test_holdout_share_matches_the_fraction() -> None:
    assert POLICY.holdout_fraction == 0.05
    share = sum(in_holdout(p, POLICY) for p in IDS) / len(IDS)
    assert 0.04 <= share <= 0.06
    half = replace(POLICY, holdout_fraction=0.5)
    assert 0.48 <= sum(in_holdout(p, half) for p in IDS) / len(IDS) <= 0.52


def test_a_larger_fraction_keeps_everyone_already_held_out() -> None:
    small = {p for p in IDS if in_holdout(p, POLICY)}
    larger = {p for p in IDS if in_holdout(p, replace(POLICY, holdout_fraction=0.1))}
    assert small < larger


def test_a_different_salt_reshuffles_the_group() -> None:
    a = {p for p in IDS if in_holdout(p, POLICY)}
    b = {p for p in IDS if in_holdout(p, replace(POLICY, holdout_salt="omnipipe-holdout-v2"))}
    assert 0.04 <= len(b) / len(IDS) <= 0.06
    # independent draws: about 5% of a group stays in the other; demand well under half
    assert len(a & b) < 0.25 * len(a)
    assert len(a ^ b) > 0.75 * (len(a) + len(b))


# ------------------------------------------------------------------------------------------ caps
T0 = ms(2025, 6, 2, 10, 0)


def contact(send_after: int, channel: str, flags: int = 0, action: str = "abandoned_cart") -> Contact:
    return (send_after - 5 * MIN_MS, send_after, send_after + 12 * HOUR_MS, send_after - HOUR_MS, channel,
            action, flags)


def test_shipped_caps() -> None:
    assert POLICY.channel_caps == {"EMAIL": Caps(2, 5), "PUSH": Caps(3, 10), "SMS": Caps(1, 2)}
    assert POLICY.overall == Caps(3, 12)


def test_channel_day_cap() -> None:
    sms = [contact(T0, "SMS")]
    assert not cap_blocked([], "SMS", T0, POLICY)
    assert cap_blocked(sms, "SMS", T0, POLICY)
    assert cap_blocked(sms, "SMS", T0 + 23 * HOUR_MS + 59 * MIN_MS, POLICY)
    assert cap_blocked(sms, "SMS", T0 - 23 * HOUR_MS, POLICY)  # a pending contact later in the day counts
    assert not cap_blocked(sms, "SMS", T0 + DAY_MS, POLICY)  # a day apart is not the same rolling day
    assert not cap_blocked(sms, "SMS", T0 - DAY_MS, POLICY)
    assert not cap_blocked(sms, "EMAIL", T0 + HOUR_MS, POLICY)
    assert not cap_blocked(sms, "PUSH", T0 + HOUR_MS, POLICY)
    email = [contact(T0, "EMAIL"), contact(T0 + HOUR_MS, "EMAIL")]
    assert cap_blocked(email, "EMAIL", T0 + 2 * HOUR_MS, POLICY)
    assert not cap_blocked(email[:1], "EMAIL", T0 + 2 * HOUR_MS, POLICY)
    assert not cap_blocked(email, "PUSH", T0 + 2 * HOUR_MS, POLICY)


def test_channel_week_cap() -> None:
    sms = [contact(T0, "SMS"), contact(T0 + 2 * DAY_MS, "SMS")]
    assert cap_blocked(sms, "SMS", T0 + 4 * DAY_MS, POLICY)  # two SMS within the week
    assert cap_blocked(sms, "SMS", T0 + 7 * DAY_MS - 1, POLICY)
    assert not cap_blocked(sms, "SMS", T0 + 7 * DAY_MS, POLICY)  # only the second within a week
    assert not cap_blocked(sms, "SMS", T0 + 9 * DAY_MS, POLICY)
    assert cap_blocked(sms, "SMS", T0 - 4 * DAY_MS, POLICY)
    assert not cap_blocked(sms, "EMAIL", T0 + 4 * DAY_MS, POLICY)
    email = [contact(T0 + d * DAY_MS, "EMAIL") for d in range(5)]
    assert cap_blocked(email, "EMAIL", T0 + 6 * DAY_MS, POLICY)
    assert not cap_blocked(email[:4], "EMAIL", T0 + 6 * DAY_MS, POLICY)


def test_overall_day_cap_across_channels() -> None:
    mixed = [contact(T0, "EMAIL"), contact(T0 + HOUR_MS, "PUSH"), contact(T0 + 2 * HOUR_MS, "SMS")]
    for channel in ("EMAIL", "PUSH", "SMS"):
        assert cap_blocked(mixed, channel, T0 + 3 * HOUR_MS, POLICY)
    assert not cap_blocked(mixed[:2], "PUSH", T0 + 3 * HOUR_MS, POLICY)  # PUSH's own day cap is 3
    assert not cap_blocked(mixed, "PUSH", T0 + 2 * HOUR_MS + DAY_MS, POLICY)


def test_a_holdout_customer_is_capped_by_its_own_holdout_records_like_the_treated_group() -> None:
    held = [contact(T0, "SMS", HOLDOUT)]
    assert cap_blocked(held, "SMS", T0 + HOUR_MS, POLICY, holdout=True)
    assert not cap_blocked(held, "SMS", T0 + HOUR_MS, POLICY)  # never sent: a treated decision ignores it
    sent = [contact(T0, "SMS")]
    assert cap_blocked(sent, "SMS", T0 + HOUR_MS, POLICY)
    assert not cap_blocked(sent, "SMS", T0 + HOUR_MS, POLICY, holdout=True)


def test_overall_week_cap_across_channels() -> None:
    only_overall = replace(POLICY, channel_caps={})
    spread = [contact(T0 + k * 13 * HOUR_MS, ("EMAIL", "PUSH", "SMS")[k % 3]) for k in range(12)]
    at = T0 + 12 * 13 * HOUR_MS
    assert not cap_blocked(spread[:11], "PUSH", at, only_overall)
    assert cap_blocked(spread, "PUSH", at, only_overall)
    assert not cap_blocked(spread, "PUSH", T0 + 7 * DAY_MS + 13 * HOUR_MS, only_overall)
    assert cap_blocked(spread, "PUSH", at, POLICY)


def test_holdout_records_do_not_count() -> None:
    for flags in (HOLDOUT, HOLDOUT | CANCELLED, HOLDOUT | DELIVERED):
        assert not cap_blocked([contact(T0, "SMS", flags)], "SMS", T0 + HOUR_MS, POLICY), flags
        many = [contact(T0 + k * MIN_MS, c, flags) for k in range(20) for c in ("EMAIL", "PUSH", "SMS")]
        assert not cap_blocked(many, "EMAIL", T0, POLICY), flags
    for flags in (0, DELIVERED, DELIVERED | OPENED | CLICKED):
        assert cap_blocked([contact(T0, "SMS", flags)], "SMS", T0 + HOUR_MS, POLICY), flags


def test_cancelled_contacts_still_count() -> None:
    # policy.counted: the sender may have sent a trigger before its cancellation reached it
    assert cap_blocked([contact(T0, "SMS", CANCELLED)], "SMS", T0 + HOUR_MS, POLICY)
    mixed = [contact(T0, "EMAIL", CANCELLED), contact(T0, "PUSH", CANCELLED | DELIVERED), contact(T0, "SMS")]
    assert cap_blocked(mixed, "PUSH", T0 + HOUR_MS, POLICY)  # overall day cap 3


def test_missing_caps_do_not_block() -> None:
    free = replace(POLICY, channel_caps={"EMAIL": Caps(None, None)}, overall=Caps(None, None))
    many = [contact(T0 + k * MIN_MS, c) for k in range(30) for c in ("EMAIL", "PUSH", "SMS")]
    for channel in ("EMAIL", "PUSH", "SMS"):
        assert not cap_blocked(many, channel, T0, free)
    zero = replace(free, channel_caps={"SMS": Caps(0, 0)})
    assert cap_blocked([], "SMS", T0, zero)
    assert not cap_blocked([], "EMAIL", T0, zero)


def _max_in_window(times: list[int], span: int) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):  # windows [t, t + span) starting at each contact cover every maximum
        j = max(j, i)
        while j < len(times) and times[j] < t + span:
            j += 1
        best = max(best, j - i)
    return best


caps = st.builds(lambda day, extra: Caps(day, None if extra is None else (day or 0) + extra),
                 st.one_of(st.none(), st.integers(0, 4)), st.one_of(st.none(), st.integers(0, 8)))
policies = st.one_of(
    st.just(POLICY),
    st.builds(lambda o, e, p, s: replace(POLICY, overall=o, channel_caps={"EMAIL": e, "PUSH": p, "SMS": s}),
              caps, caps, caps, caps),
)
Attempt = tuple[int, str, int]
attempts = st.lists(
    st.tuples(st.integers(0, 21 * DAY_MS // MIN_MS), st.sampled_from(("EMAIL", "PUSH", "SMS")),
              st.sampled_from((0, 0, 0, DELIVERED, DELIVERED | OPENED | CLICKED, HOLDOUT, CANCELLED,
                               HOLDOUT | CANCELLED))),
    max_size=80,
)


@settings(max_examples=250)
@given(policies, attempts)
def test_greedy_contacts_never_exceed_a_rolling_cap(policy: Policy, tries: list[Attempt]) -> None:
    contacts: list[Contact] = []
    for minute, channel, flags in tries:
        s = T0 + minute * MIN_MS
        if flags & HOLDOUT:
            contacts.append(contact(s, channel, flags))  # holdout records: kept regardless, never count
        elif not cap_blocked(contacts, channel, s, policy):
            contacts.append(contact(s, channel, flags))  # a later cancellation does not free the slot
    live = [c for c in contacts if not c[6] & HOLDOUT]
    groups = {"overall": (policy.overall, [c[1] for c in live])}
    for channel, ch_caps in policy.channel_caps.items():
        groups[channel] = (ch_caps, [c[1] for c in live if c[4] == channel])
    for name, (group_caps, times) in groups.items():
        for cap, span in ((group_caps.day, DAY_MS), (group_caps.week, WEEK_MS)):
            if cap is not None:
                assert _max_in_window(times, span) <= cap, (name, cap, span)
    # and the caps are not vacuous: a first counted contact is always accepted unless a cap is 0
    first = next(((m, c) for m, c, f in tries if not f & HOLDOUT), None)
    if first is not None:
        every = (policy.overall, policy.channel_caps.get(first[1], Caps(None, None)))
        if all(v is None or v > 0 for c in every for v in (c.day, c.week)):
            assert live


# ------------------------------------------------------------------------------------------ last_decided
def test_last_decided_uses_contacts_and_the_last_trigger_map() -> None:
    assert last_decided([], {}, "abandoned_cart") is None
    contacts = [
        (100, 5000, 9000, 50, "EMAIL", "abandoned_cart", 0),  # created 100, sent much later: created counts
        (300, 300, 9000, 250, "PUSH", "abandoned_cart", HOLDOUT),  # holdout decisions count for cooldown
        (700, 700, 9000, 650, "EMAIL", "welcome", 0),
    ]
    assert last_decided(contacts, {}, "abandoned_cart") == 300
    assert last_decided(contacts, {}, "welcome") == 700
    assert last_decided(contacts, {}, "win_back") is None
    trig = {"abandoned_cart/SMS": 450, "welcome/PUSH": 900, "abandoned_cart_v2/EMAIL": 10_000}
    assert last_decided(contacts, trig, "abandoned_cart") == 450
    assert last_decided(contacts, trig, "welcome") == 900
    assert last_decided(contacts, {"abandoned_cart/EMAIL": 200}, "abandoned_cart") == 300
    assert last_decided([], {"win_back/EMAIL": 42, "win_back/SMS": 41}, "win_back") == 42
    assert last_decided([], trig, "abandoned_cart_v2") == 10_000
    assert last_decided(iter(contacts), trig, "abandoned_cart") == 450  # any iterable (dict values)
