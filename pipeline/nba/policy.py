"""Contact policy over plain data: quiet hours, the holdout group, frequency caps and cooldowns.

Pure functions of the policy, the profile's recorded contacts and times in
epoch milliseconds, so the rules the issue states are tested directly
(tests/nba/test_policy.py, tests/nba/test_rules.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.nba.catalogue import Caps, Policy
from pipeline.profile.state import Contact

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS

# Contact flags (the last field of a Contact)
HOLDOUT = 1  # decided for a holdout customer: recorded, never sent
CANCELLED = 2  # withdrawn by a later event (a purchase, an opt-out)
DELIVERED = 4
OPENED = 8
CLICKED = 16
UNSUBSCRIBED = 32
CONVERTED = 64
FAILED = 128


@lru_cache(maxsize=1024)
def zone(name: str | None, default: str) -> ZoneInfo:
    """The customer's zone; an unknown or missing name falls back to the policy's default."""
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name that is a directory
            pass
    return ZoneInfo(default)


def _quiet(minute: int, policy: Policy) -> bool:
    start, end = policy.quiet_start_min, policy.quiet_end_min
    if start == end:
        return False
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


def is_quiet(t_ms: int, tz: str | None, policy: Policy) -> bool:
    local = dt.datetime.fromtimestamp(t_ms / 1000, tz=zone(tz, policy.default_timezone))
    return _quiet(local.hour * 60 + local.minute, policy)


def next_allowed(t_ms: int, tz: str | None, policy: Policy) -> int:
    """``t_ms`` if it is outside quiet hours in the customer's zone, else the next end of quiet hours.

    Computed on the local calendar (zoneinfo), so a DST change between now and
    the morning moves the UTC instant, not the local 08:00.
    """
    z = zone(tz, policy.default_timezone)
    local = dt.datetime.fromtimestamp(t_ms / 1000, tz=z)
    minute = local.hour * 60 + local.minute
    if not _quiet(minute, policy):
        return t_ms
    end = policy.quiet_end_min
    day = local.date()
    if policy.quiet_start_min > end and minute >= policy.quiet_start_min:
        day += dt.timedelta(days=1)  # evening: the quiet hours end tomorrow morning
    candidates = []
    for fold in (0, 1):  # a repeated (fall-back) hour has the end time twice
        wall = dt.datetime.combine(day, dt.time(end // 60, end % 60, fold=fold), tzinfo=z)
        out = int(wall.timestamp() * 1000)
        if out > t_ms and not is_quiet(out, tz, policy):
            candidates.append(out)
    if not candidates:  # the end time fell into a DST gap: the first allowed minute after it
        out = t_ms - t_ms % 60_000
        for _ in range(3 * 24 * 60):
            out += 60_000
            if not is_quiet(out, tz, policy):
                return out
        return t_ms + DAY_MS  # unreachable with a sane policy; never earlier than asked
    best = min(candidates)
    for _ in range(180):  # a DST change may have opened allowed minutes before the local end time
        earlier = best - 60_000
        if earlier <= t_ms or is_quiet(earlier, tz, policy):
            break
        best = earlier
    return best


def in_holdout(profile_id: str, policy: Policy) -> bool:
    """Deterministic per profile id and salt: the same customer is always in or out of the group."""
    if policy.holdout_fraction <= 0:
        return False
    digest = hashlib.blake2b(f"{policy.holdout_salt}|{profile_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < policy.holdout_fraction


def counted(contacts: Iterable[Contact], holdout: bool = False) -> list[Contact]:
    """Contacts that count against caps: every trigger emitted, withdrawn ones too (the sender may
    have sent it before the cancellation reached it). A holdout customer's caps count its own
    holdout records instead, so the holdout is capped exactly like the treated group and the two
    groups' conversions compare like with like."""
    return [c for c in contacts if bool(c[6] & HOLDOUT) == holdout]


def _over(times: list[int], s: int, caps: Caps) -> bool:
    """Whether one more contact at ``s`` would put more than the cap into some day (week) window.

    Checking every contact within one window length on either side of ``s``
    guarantees that no rolling window containing ``s`` exceeds the cap.
    """
    for cap, span in ((caps.day, DAY_MS), (caps.week, WEEK_MS)):
        if cap is not None and sum(1 for t in times if s - span < t < s + span) >= cap:
            return True
    return False


def cap_blocked(contacts: Iterable[Contact], channel: str, send_after: int, policy: Policy,
                holdout: bool = False) -> bool:
    live = counted(contacts, holdout)
    if _over([c[1] for c in live], send_after, policy.overall):
        return True
    caps = policy.channel_caps.get(channel)
    return caps is not None and _over([c[1] for c in live if c[4] == channel], send_after, caps)


def last_decided(contacts: Iterable[Contact], last_trigger: dict[str, int], action: str) -> int | None:
    """The latest decision (sent, pending or holdout) or sender-reported send of ``action``."""
    times = [c[0] for c in contacts if c[5] == action]
    times += [t for key, t in last_trigger.items() if key.partition("/")[0] == action]
    return max(times) if times else None
