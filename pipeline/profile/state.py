"""One customer's live profile, and the merge of two profiles into one.

Everything a profile holds is one of four shapes, chosen so that merging two
profiles is exact and does not depend on which side is which:

- counters (events, purchases, engagement, revenue in minor units): they add;
- times (first/last seen, last purchase): min or max;
- last-writer-wins registers (store, timezone, consent per channel and
  purpose): the later event time wins, ties broken by value (a refusal of
  consent beats a grant at the same instant);
- capped keyed sets (identifiers, recent products, purchase times, the event
  memo): the newest ``cap`` entries by event time.

So ``merge`` is commutative and associative (tests/profile/test_merge.py
checks it with hypothesis), and folding two halves of a customer's events
into two profiles and merging them gives the profile of all the events. The
exceptions are named where they are: the cart (a line is a running quantity,
the newer line wins a merge) and per-category purchase counts beyond their
cap (the smallest go under ``other``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pipeline.profile.limits import Caps

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# per-channel counters: ChannelStats indices
EVENTS, FIRST, LAST, SENT, DELIVERED, OPENED, CLICKED, UNSUBSCRIBED, FAILED = range(9)
CHANNEL_FIELDS = ("events", "first_seen", "last_seen", "sent", "delivered", "opened", "clicked",
                  "unsubscribed", "failed")
OTHER = "other"

Register = tuple[int, Any]  # (event time, value)
CartLine = tuple[int, int, str, int]  # (quantity, unit price in minor units, category, changed at)
#: A next-best-action decision recorded on the profile (``pipeline/nba/contacts.py`` reads and writes it):
#: (created at, send after, expires at, basis time, channel, action, flags)
Contact = tuple[int, int, int, int, str, str, int]


def new_channel_stats(t: int) -> list[int]:
    return [0, t, t, 0, 0, 0, 0, 0, 0]


@dataclass(slots=True)
class ProfileState:
    """A live profile; mutable, folded in place by ``fold.fold_event``."""

    events: int = 0
    first_seen: int | None = None
    last_seen: int | None = None
    identified_at: int | None = None  # first event carrying a stable identifier (login, card, e-mail, phone)
    identifiers: dict[str, int] = field(default_factory=dict)  # ref -> last seen
    channels: dict[str, list[int]] = field(default_factory=dict)  # channel -> ChannelStats
    products: dict[str, tuple[int, str]] = field(default_factory=dict)  # sku -> (last viewed, category)
    categories: dict[str, int] = field(default_factory=dict)  # category -> last viewed
    cart: dict[str, CartLine] = field(default_factory=dict)  # sku -> line
    cart_changed_at: int | None = None
    orders_online: int = 0
    orders_store: int = 0
    revenue: dict[str, int] = field(default_factory=dict)  # currency -> minor units
    last_purchase_at: int | None = None
    purchase_categories: dict[str, int] = field(default_factory=dict)  # category -> items bought
    purchase_times: list[int] = field(default_factory=list)  # newest first
    returns: int = 0
    returned: dict[str, int] = field(default_factory=dict)  # currency -> minor units
    registers: dict[str, Register] = field(default_factory=dict)  # store, region, timezone, ...
    consent: dict[str, tuple[int, bool]] = field(default_factory=dict)  # "CHANNEL/purpose" -> (at, granted)
    last_trigger: dict[str, int] = field(default_factory=dict)  # "action/CHANNEL" -> last sent
    memo: dict[int, int] = field(default_factory=dict)  # event id digest -> ingest time
    merged_from: dict[str, int] = field(default_factory=dict)  # profile id folded in -> when
    contacts: dict[str, Contact] = field(default_factory=dict)  # trigger key -> decision (pipeline/nba)


# ---------------------------------------------------------------------------- capped shapes
def newest(entries: dict[K, V], cap: int, when: Callable[[K, V], Any]) -> dict[K, V]:
    """The ``cap`` entries with the greatest ``when`` (ties by key): order-independent."""
    if len(entries) <= cap:
        return entries
    kept = sorted(entries.items(), key=lambda kv: when(kv[0], kv[1]), reverse=True)[:cap]
    return dict(kept)


def by_time(key: Any, value: int) -> tuple[int, Any]:
    return value, key


def by_first(key: Any, value: tuple[Any, ...]) -> tuple[Any, Any]:
    return value[0], key


def cap_identifiers(ids: dict[str, int], cap: int) -> dict[str, int]:
    """Per kind, the ``cap`` most recently seen."""
    kinds: dict[str, dict[str, int]] = {}
    for ref, t in ids.items():
        kinds.setdefault(ref.partition(":")[0], {})[ref] = t
    if all(len(refs) <= cap for refs in kinds.values()):
        return ids
    out: dict[str, int] = {}
    for refs in kinds.values():
        out.update(newest(refs, cap, by_time))
    return out


def cap_counts(counts: dict[str, int], cap: int) -> dict[str, int]:
    """At most ``cap`` keys: the largest ``cap - 1`` (ties by name) keep theirs, the rest add to ``other``."""
    if len(counts) <= cap:
        return counts
    ranked = sorted(((n, k) for k, n in counts.items() if k != OTHER), reverse=True)
    kept = dict((k, n) for n, k in ranked[:cap - 1])
    kept[OTHER] = counts.get(OTHER, 0) + sum(n for n, _ in ranked[cap - 1:])
    return kept


def register_rank(reg: Register) -> tuple[int, str]:
    return reg[0], repr(reg[1])


def consent_rank(entry: tuple[int, bool]) -> tuple[int, bool]:
    return entry[0], not entry[1]  # at the same instant a refusal wins


# ---------------------------------------------------------------------------- merge
def _add(a: Mapping[K, int], b: Mapping[K, int]) -> dict[K, int]:
    out = dict(a)
    for k, n in b.items():
        out[k] = out.get(k, 0) + n
    return out


def _max_by(a: Mapping[K, V], b: Mapping[K, V], rank: Callable[[V], Any]) -> dict[K, V]:
    out = dict(a)
    for k, v in b.items():
        mine = out.get(k)
        if mine is None or rank(v) > rank(mine):
            out[k] = v
    return out


def _ident(v: Any) -> Any:
    return v


def _opt(f: Callable[[int, int], int], a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return f(a, b)


def _merge_channel(a: list[int], b: list[int]) -> list[int]:
    out = [x + y for x, y in zip(a, b, strict=True)]
    out[FIRST] = min(a[FIRST], b[FIRST])
    out[LAST] = max(a[LAST], b[LAST])
    return out


def _cart_rank(line: CartLine) -> tuple[int, int, int, str]:
    quantity, price, category, changed = line
    return changed, quantity, price, category


def merge(a: ProfileState, b: ProfileState, caps: Caps) -> ProfileState:
    """One profile holding both: nothing lost, nothing counted twice."""
    channels = dict(a.channels)
    for ch, stats in b.channels.items():
        mine = channels.get(ch)
        channels[ch] = stats[:] if mine is None else _merge_channel(mine, stats)
    return ProfileState(
        events=a.events + b.events,
        first_seen=_opt(min, a.first_seen, b.first_seen),
        last_seen=_opt(max, a.last_seen, b.last_seen),
        identified_at=_opt(min, a.identified_at, b.identified_at),
        identifiers=cap_identifiers(_max_by(a.identifiers, b.identifiers, _ident), caps.identifiers_per_kind),
        channels=channels,
        products=newest(_max_by(a.products, b.products, _ident), caps.recent_products, by_first),
        categories=newest(_max_by(a.categories, b.categories, _ident), caps.recent_categories, by_time),
        cart=newest(_max_by(a.cart, b.cart, _cart_rank), caps.cart_items, _line_when),
        cart_changed_at=_opt(max, a.cart_changed_at, b.cart_changed_at),
        orders_online=a.orders_online + b.orders_online,
        orders_store=a.orders_store + b.orders_store,
        revenue=_add(a.revenue, b.revenue),
        last_purchase_at=_opt(max, a.last_purchase_at, b.last_purchase_at),
        purchase_categories=cap_counts(_add(a.purchase_categories, b.purchase_categories),
                                       caps.purchase_categories),
        purchase_times=sorted(a.purchase_times + b.purchase_times, reverse=True)[:caps.purchase_times],
        returns=a.returns + b.returns,
        returned=_add(a.returned, b.returned),
        registers=_max_by(a.registers, b.registers, register_rank),
        consent=_max_by(a.consent, b.consent, consent_rank),
        last_trigger=_max_by(a.last_trigger, b.last_trigger, _ident),
        memo=newest(_max_by(a.memo, b.memo, _ident), caps.memo, by_time),
        merged_from=newest(_max_by(a.merged_from, b.merged_from, _ident), caps.merged_from, by_time),
        contacts=newest(_merge_contacts(a.contacts, b.contacts), caps.contacts, by_first),
    )


def _merge_contacts(a: Mapping[str, Contact], b: Mapping[str, Contact]) -> dict[str, Contact]:
    """The same decision on both sides (a redelivered merge) keeps every outcome either side saw."""
    out = dict(a)
    for key, c in b.items():
        mine = out.get(key)
        out[key] = c if mine is None else (*mine[:6], mine[6] | c[6])
    return out


def _line_when(sku: str, line: CartLine) -> tuple[int, str]:
    return line[3], sku
