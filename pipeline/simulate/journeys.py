"""Synthetic omnichannel customer journeys, the input of ``omnipipe simulate``.

Pure and deterministic: the same :class:`JourneyConfig` always yields the same
events in the same order, so a failing run can be replayed and the ground truth
(``truth.py``) is reproducible. No I/O happens here.

Why it is built this way:

* Events come out of a generator sorted by ``event_time``. People "arrive"
  (first session) at times that a cheap hash gives for every person up front;
  a person is only materialised when the clock reaches their arrival, their
  sessions are planned then, and each session is expanded into events only
  when the clock reaches its start. Memory therefore holds compact per-person
  state plus the events of sessions in flight, never the whole run.
* A person's sessions are at least ``SESSION_GAP_MS`` apart and no session
  lasts longer than that, so per-person state (logins, cart, consent) changes
  in time order and every session sees the state its predecessors left.
* Randomness comes from per-(seed, person, session) ``random.Random`` streams,
  so adding people does not change existing people's journeys.

Records are complete dicts for their Avro schema (every field present,
``event_time`` as int epoch millis, enum symbols as str).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import heapq
import random
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate
from typing import Any, NamedTuple, TypeVar

from pipeline.ingest.identifiers import KINDS

Record = dict[str, Any]

SEC_MS = 1000
MIN_MS = 60 * SEC_MS
HOUR_MS = 60 * MIN_MS
DAY_MS = 24 * HOUR_MS
#: 2026-01-05T00:00:00Z; runs against a real pipeline pass a start relative to "now".
DEFAULT_START_MS = 1_767_571_200_000
#: Minimum time between two sessions of one person (and the maximum session length).
SESSION_GAP_MS = 3 * HOUR_MS
#: Used to spread an exact number of bad records over a run before its length is known.
EXPECTED_EVENTS_PER_CUSTOMER = 11.0

# Logical topic keys; the catalogue (topologies/topics.yaml) maps them to Kafka topics.
WEB, APP, POS, CALLCENTER, EMAIL, PUSH, SMS, PRIVACY = (
    "web", "app", "pos", "callcenter", "email", "push", "sms", "privacy",
)
TOPIC_KEYS = (WEB, APP, POS, CALLCENTER, EMAIL, PUSH, SMS, PRIVACY)
IDENTIFIER_KINDS = KINDS  # the ingest contract's kinds, strongest first

_MASK64 = (1 << 64) - 1


class SimEvent(NamedTuple):
    """One generated record: logical topic, Kafka key, Avro-ready value, and who did it.

    A NamedTuple because millions are created: it is the cheapest immutable record.
    """

    topic_key: str
    key: bytes | None
    record: Record
    person: int

    @property
    def event_time(self) -> int:
        return int(self.record["event_time"])


@dataclass(frozen=True, slots=True)
class JourneyConfig:
    """What to simulate. Shares are fractions of the population."""

    customers: int = 1000
    seed: int = 1
    start_ms: int = DEFAULT_START_MS
    days: float = 14.0
    anonymous_share: float = 0.08  # visitors who never log in
    store_only_share: float = 0.06  # loyalty card holders without an online account
    quiet_share: float = 0.2  # people with a silent period of several days
    erasure_share: float = 0.004  # people who ask to be forgotten (last thing they do)
    shared_device_every: int = 200  # one family-tablet pair per this many people (0 = none)

    def __post_init__(self) -> None:
        if not 0 <= self.customers < 1 << 24:
            raise ValueError("customers must be between 0 and 16,777,215")
        if self.days * DAY_MS < 2 * SESSION_GAP_MS:
            raise ValueError(f"days must be at least {2 * SESSION_GAP_MS / DAY_MS} (two session gaps)")
        shares = (self.anonymous_share, self.store_only_share, self.quiet_share, self.erasure_share)
        if not all(0.0 <= x <= 1.0 for x in shares) or self.anonymous_share + self.store_only_share > 1:
            raise ValueError("population shares must be fractions between 0 and 1")

    @property
    def end_ms(self) -> int:
        return self.start_ms + int(self.days * DAY_MS)


# --------------------------------------------------------------------------- static world

@dataclass(frozen=True, slots=True)
class Zone:
    tz: str
    locale: str
    currency: str
    country: str
    phone_prefix: str  # E.164 prefix; the rest is ``phone_digits`` digits
    phone_digits: int
    weight: int
    std_offset_h: float  # fallback when the system has no tz database


ZONES: tuple[Zone, ...] = (
    Zone("Europe/London", "en-GB", "GBP", "UK", "+447", 9, 14, 0),
    Zone("Europe/Paris", "fr-FR", "EUR", "FR", "+336", 8, 9, 1),
    Zone("Europe/Berlin", "de-DE", "EUR", "DE", "+4915", 9, 9, 1),
    Zone("Europe/Madrid", "es-ES", "EUR", "ES", "+346", 8, 5, 1),
    Zone("Europe/Amsterdam", "nl-NL", "EUR", "NL", "+316", 8, 3, 1),
    Zone("America/New_York", "en-US", "USD", "US", "+1212", 7, 12, -5),
    Zone("America/Chicago", "en-US", "USD", "US", "+1312", 7, 6, -6),
    Zone("America/Los_Angeles", "en-US", "USD", "US", "+1213", 7, 8, -8),
    Zone("America/Toronto", "en-CA", "CAD", "CA", "+1416", 7, 3, -5),
    Zone("America/Sao_Paulo", "pt-BR", "BRL", "BR", "+55119", 8, 4, -3),
    Zone("America/Mexico_City", "es-MX", "MXN", "MX", "+5255", 8, 3, -6),
    Zone("Asia/Tokyo", "ja-JP", "JPY", "JP", "+8190", 8, 6, 9),
    Zone("Asia/Singapore", "en-SG", "SGD", "SG", "+658", 7, 3, 8),
    Zone("Asia/Kolkata", "en-IN", "INR", "IN", "+919", 9, 5, 5.5),
    Zone("Australia/Sydney", "en-AU", "AUD", "AU", "+6142", 7, 5, 11),
    Zone("Australia/Perth", "en-AU", "AUD", "AU", "+6148", 7, 2, 8),
)
_ZONE_CUM: tuple[int, ...] = tuple(
    sum(z.weight for z in ZONES[: i + 1]) for i in range(len(ZONES))
)
STORES_PER_COUNTRY = 12
_PRICE_FACTOR = {"GBP": 0.86, "EUR": 1.0, "USD": 1.08, "CAD": 1.48, "BRL": 5.4, "MXN": 18.5,
                 "JPY": 160.0, "SGD": 1.45, "INR": 90.0, "AUD": 1.65}
_WHOLE_CURRENCIES = {"JPY", "INR"}

_CATEGORIES: tuple[tuple[str, float, float, tuple[str, ...]], ...] = (
    ("shoes", 35.0, 180.0, ("running shoes", "sneakers", "boots", "sandals", "trail shoes")),
    ("outerwear", 40.0, 320.0, ("rain jacket", "parka", "fleece", "gilet", "wool coat")),
    ("beauty", 4.0, 90.0, ("moisturiser", "sunscreen", "lipstick", "shampoo", "perfume")),
    ("grocery", 1.0, 25.0, ("coffee beans", "olive oil", "granola", "green tea", "pasta")),
    ("electronics", 15.0, 900.0, ("headphones", "charger", "smart watch", "speaker", "tablet")),
    ("home", 5.0, 250.0, ("towels", "lamp", "duvet", "mug set", "plant pot")),
    ("toys", 6.0, 120.0, ("puzzle", "building blocks", "plush bear", "board game", "kite")),
    ("sports", 8.0, 400.0, ("yoga mat", "dumbbells", "tennis racket", "bike helmet", "water bottle")),
)


def _build_products() -> tuple[tuple[str, str, float], ...]:
    """A fixed product range (independent of the seed): (sku, category, base price)."""
    rng = random.Random(20260105)
    out = []
    for cat, lo, hi, _ in _CATEGORIES:
        for n in range(50):
            price = round(lo * (hi / lo) ** rng.random(), 2)
            out.append((f"SKU-{cat[:3].upper()}-{n:04d}", cat, price))
    return tuple(out)


PRODUCTS = _build_products()
_N_PRODUCTS = len(PRODUCTS)
_QUERIES = tuple(q for c in _CATEGORIES for q in c[3])
_CAMPAIGNS = ("weekly_newsletter", "new_arrivals", "seasonal_sale", "loyalty_points",
              "back_in_stock", "member_offer")
_CALL_REASONS = ("ORDER_STATUS", "RETURN", "BILLING", "PRODUCT_QUESTION", "DELIVERY", "ACCOUNT")
_CALL_OUTCOMES = ("RESOLVED", "ESCALATED", "INFO_GIVEN", "REFUND_ISSUED")
_REFERRERS = ("https://www.google.com/", "https://www.bing.com/", "https://instagram.com/",
              None, None, None)


@lru_cache(maxsize=4096)
def _price_table(currency: str) -> tuple[float, ...]:
    f = _PRICE_FACTOR[currency]
    if currency in _WHOLE_CURRENCIES:
        return tuple(float(round(p * f)) for _, _, p in PRODUCTS)
    return tuple(round(p * f, 2) for _, _, p in PRODUCTS)


@lru_cache(maxsize=256)
def _utc_offset_ms(tz: str, at_ms: int, fallback_h: float) -> int:
    """The zone's UTC offset at the start of the run (DST changes mid-run are ignored)."""
    try:
        from zoneinfo import ZoneInfo

        when = _dt.datetime.fromtimestamp(at_ms / 1000, tz=_dt.UTC)
        offset = when.astimezone(ZoneInfo(tz)).utcoffset()
        if offset is not None:
            return int(offset.total_seconds() * 1000)
    except Exception:  # no tz database: use the standard offset
        pass
    return int(fallback_h * HOUR_MS)


# --------------------------------------------------------------------------- hashing

def _rint(rng: random.Random, lo: int, hi: int) -> int:
    """``rng.randint`` without its argument checks (about 5x faster, same role)."""
    return lo + int(rng.random() * (hi - lo + 1))


T = TypeVar("T")


def _pick(rng: random.Random, seq: Sequence[T]) -> T:
    """``rng.choice`` without its overhead."""
    return seq[int(rng.random() * len(seq))]


def _weighted(rng: random.Random, values: Sequence[T], cum_weights: Sequence[float]) -> T:
    """``rng.choices(values, cum_weights=...)[0]`` without its overhead."""
    return values[bisect_right(cum_weights, rng.random() * cum_weights[-1])]


def _mix(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-spread hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


@lru_cache(maxsize=64)
def _seed_base(seed: int) -> int:
    return _mix(_mix(seed & _MASK64))


def stream_seed(seed: int, person: int, stream: int) -> int:
    """Seed of one independent random stream (person profile, plan, or one session)."""
    return _mix((_seed_base(seed) + person * 0xD1B54A32D192ED03 + stream * 0x8CB92BA72F3D8DD7) & _MASK64)


@lru_cache(maxsize=64)
def run_tag(seed: int) -> str:
    """Short seed-derived tag that keeps ids of runs with different seeds apart."""
    return hashlib.blake2b(str(seed).encode(), digest_size=4).hexdigest()


def _permute(person: int, modulus: int, salt: int) -> int:
    """A bijection of [0, modulus) (modulus a power of ten): unique, random-looking numbers."""
    mult = 7_919_017  # odd and not a multiple of 5: coprime with every power of ten
    return (person * mult + salt) % modulus


def _uuid(bits: int) -> str:
    h = f"{bits & ((1 << 128) - 1):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


_PROFILE_STREAM = 1 << 40
_PLAN_STREAM = 2 << 40
_ARRIVAL_STREAM = 3 << 40
_ZONE_STREAM = 4 << 40


def _zone_index(seed: int, person: int) -> int:
    r = stream_seed(seed, person, _ZONE_STREAM) % _ZONE_CUM[-1]
    for i, cum in enumerate(_ZONE_CUM):
        if r < cum:
            return i
    return len(ZONES) - 1  # pragma: no cover


def _waking(t: int, offset_ms: int, r: int) -> int:
    """Move ``t`` forward into the local 08:00-22:59 window if it falls at night."""
    local = t + offset_ms
    hour = (local // HOUR_MS) % 24
    if 7 <= hour < 23:
        return t
    day_start = local - local % DAY_MS + (DAY_MS if hour >= 23 else 0)
    return day_start + (8 + r % 14) * HOUR_MS + (r >> 8) % HOUR_MS - offset_ms


def arrival_ms(cfg: JourneyConfig, person: int) -> int:
    """When a person's first session starts: front-loaded over the span, in local waking hours."""
    h = stream_seed(cfg.seed, person, _ARRIVAL_STREAM)
    last_start = max(cfg.start_ms, cfg.end_ms - SESSION_GAP_MS)
    usable = max(1, last_start - cfg.start_ms - DAY_MS)
    u = (h >> 11) / float(1 << 53)
    t = cfg.start_ms + int(usable * u ** 1.7)
    zone = ZONES[_zone_index(cfg.seed, person)]
    t = _waking(t, _utc_offset_ms(zone.tz, cfg.start_ms, zone.std_offset_h), h & 0xFFFFFFFF)
    return min(t, last_start)


# --------------------------------------------------------------------------- people

@dataclass(slots=True)
class Person:
    """A synthetic person: fixed identifiers and traits, plus the state their journey changes."""

    index: int
    kind: str  # "customer" | "anonymous" | "store_only"
    tz: str
    locale: str
    currency: str
    country: str
    offset_ms: int
    home_store: str
    customer_id: str | None = None
    loyalty_card: str | None = None
    email: str | None = None
    phone: str | None = None
    devices: list[str] = field(default_factory=list)
    cookies: list[str] = field(default_factory=list)
    push_capable: set[str] = field(default_factory=set)  # devices where push is allowed
    card_mode: str = "none"  # "linked" | "late" | "unlinked" | "none"
    signup_pending: bool = False  # the account is created during the run (SIGNUP)
    quiet: bool = False
    erase: bool = False
    shared_device: str | None = None
    shared_role: int = -1  # 0: the family member who installed the tablet, 1: the other
    # journey state
    logged_cookies: set[str] = field(default_factory=set)
    logged_devices: set[str] = field(default_factory=set)
    installed: set[str] = field(default_factory=set)
    push_ready: list[str] = field(default_factory=list)  # devices that reported a push token
    cart: list[Record] = field(default_factory=list)
    card_registered: bool = False
    consent_synced: bool = False  # the account's marketing choices were published (first login)
    email_ok: bool = True
    sms_ok: bool = True
    push_ok: bool = True
    last_order: str | None = None
    last_basket: list[Record] = field(default_factory=list)
    erased: bool = False


def _shared_pair(cfg: JourneyConfig, person: int) -> tuple[int, int] | None:
    """(pair number, role) when this person shares a family tablet with a neighbour."""
    every = cfg.shared_device_every
    if every <= 1:
        return None
    pair, pos = divmod(person, every)
    if pos > 1 or pair * every + 1 >= cfg.customers:
        return None
    return pair, pos


def build_person(cfg: JourneyConfig, person: int) -> Person:
    """The person's identifiers and traits; depends only on (seed, person)."""
    rng = random.Random(stream_seed(cfg.seed, person, _PROFILE_STREAM))
    zone = ZONES[_zone_index(cfg.seed, person)]
    shared = _shared_pair(cfg, person)
    r = rng.random()
    if shared is not None:
        kind = "customer"
    elif r < cfg.anonymous_share:
        kind = "anonymous"
    elif r < cfg.anonymous_share + cfg.store_only_share:
        kind = "store_only"
    else:
        kind = "customer"
    tag = run_tag(cfg.seed)
    p = Person(
        index=person, kind=kind, tz=zone.tz, locale=zone.locale, currency=zone.currency,
        country=zone.country, offset_ms=_utc_offset_ms(zone.tz, cfg.start_ms, zone.std_offset_h),
        home_store=f"ST-{zone.country}-{int(rng.random() * STORES_PER_COUNTRY) + 1:03d}",
    )

    def phone() -> str:
        digits = zone.phone_digits
        return zone.phone_prefix + f"{_permute(person, 10 ** digits, 4_242_421):0{digits}d}"

    n_cookies = _weighted(rng, (1, 2, 3, 4), (40, 70, 90, 100))
    if kind == "anonymous":
        p.cookies = [_uuid(rng.getrandbits(128)) for _ in range(_pick(rng, (1, 1, 2)))]
        return p
    if kind == "store_only":
        p.loyalty_card = f"6339{_permute(person, 10 ** 12, 31_337_000_001):012d}"
        p.card_mode = "unlinked"
        if rng.random() < 0.6:
            p.phone = phone()
        if rng.random() < 0.5:
            p.cookies = [_uuid(rng.getrandbits(128))]
        p.sms_ok = rng.random() < 0.5
        return p
    p.customer_id = f"C{tag[:2]}{_permute(person, 10 ** 8, 12_345_678):08d}"
    p.email = f"p{person}.{_pick(rng, 'abcdefghjkmnpqrstuvwxyz')}{int(rng.random() * 10)}@example.com"
    p.cookies = [_uuid(rng.getrandbits(128)) for _ in range(n_cookies)]
    if rng.random() < 0.65:
        p.phone = phone()
    if shared is not None or rng.random() < 0.55:
        n_dev = _weighted(rng, (1, 2, 3), (70, 92, 100))
        p.devices = [_uuid(rng.getrandbits(128)) for _ in range(n_dev)]
        p.push_capable = {d for d in p.devices if rng.random() < 0.65}
    if rng.random() < 0.55:
        p.loyalty_card = f"6339{_permute(person, 10 ** 12, 31_337_000_001):012d}"
        p.card_mode = _weighted(rng, ("linked", "late", "unlinked"), (45, 80, 100))
    p.signup_pending = p.card_mode != "late" and rng.random() < 0.2
    p.email_ok = rng.random() < 0.85
    p.sms_ok = p.phone is not None and rng.random() < 0.6
    p.quiet = rng.random() < cfg.quiet_share
    p.erase = shared is None and rng.random() < cfg.erasure_share
    if shared is not None:
        pair, role = shared
        dev = _uuid(_mix(stream_seed(cfg.seed, pair, _PROFILE_STREAM + 7)) << 64
                    | stream_seed(cfg.seed, pair, _PROFILE_STREAM + 8))
        p.shared_device, p.shared_role = dev, role
        p.devices.append(dev)
        if role == 1:
            p.installed.add(dev)  # the other family member installed it
    return p


# --------------------------------------------------------------------------- planning

def _plan(cfg: JourneyConfig, p: Person, arrival: int) -> list[tuple[int, str]]:
    """The person's sessions (start time, kind), first at ``arrival``, >= SESSION_GAP_MS apart."""
    rng = random.Random(stream_seed(cfg.seed, p.index, _PLAN_STREAM))
    last_start = cfg.end_ms - SESSION_GAP_MS
    # (time, forced, kind); forced sessions survive the spacing pass.
    cands: list[tuple[int, bool, str]] = []
    kinds: tuple[str, ...]
    weights: tuple[float, ...]  # cumulative
    if p.kind == "anonymous":
        first, mean_more = "web", 1.0
        kinds, weights = ("web",), (1.0,)
    else:
        kinds_w: list[tuple[str, float]] = []
        if p.cookies:
            kinds_w.append(("web", 3.0 if p.kind == "customer" else 0.8))
        if p.devices:
            kinds_w.append(("app", 2.5))
        if p.loyalty_card:
            kinds_w.append(("store", 2.0))
        if p.email and p.email_ok:  # gateways only report on messages they were allowed to send
            kinds_w.append(("email", 1.6))
        if p.push_capable:
            kinds_w.append(("push", 1.5))
        if p.phone:
            kinds_w.append(("call", 0.4))
            if p.sms_ok:
                kinds_w.append(("sms", 0.6))
        if p.customer_id:
            kinds_w.append(("prefs", 0.12))
        kinds = tuple(k for k, _ in kinds_w)
        weights = tuple(accumulate(w for _, w in kinds_w))
        mean_more = 2.2 if p.kind == "customer" else 1.4
        if p.signup_pending:
            first = "web"
        elif p.card_mode == "late" or p.kind == "store_only":
            first = "store"
        else:
            first = _weighted(rng, kinds, weights)
    cands.append((arrival, True, first))
    n_more = min(12, int(rng.expovariate(1.0 / mean_more) + 0.5))
    lo = arrival + SESSION_GAP_MS
    if lo < last_start:
        for _ in range(n_more):
            kind = _weighted(rng, kinds, weights)
            t = _waking(_rint(rng, lo, last_start), p.offset_ms, rng.getrandbits(32))
            cands.append((t, False, kind))
        if p.card_mode == "late":
            earliest = min(last_start, arrival + 4 * DAY_MS)
            cands.append((_rint(rng, earliest, max(earliest, last_start)), True, "card_register"))
        if p.shared_device is not None:
            cands.append((_rint(rng, lo, last_start), True, "app_shared"))
    if p.quiet and lo < last_start:
        q0 = _rint(rng, lo, last_start)
        q1 = q0 + _rint(rng, 4, 8) * DAY_MS
        cands = [c for c in cands if c[1] or not q0 <= c[0] < q1]
    cands.sort()
    kept: list[tuple[int, bool, str]] = []
    for c in cands:
        if kept and c[0] - kept[-1][0] < SESSION_GAP_MS:
            if c[1] and not kept[-1][1]:
                kept[-1] = c  # still >= SESSION_GAP_MS after kept[-2]: c is later than what it replaces
            elif c[1]:
                kept.append((kept[-1][0] + SESSION_GAP_MS, True, c[2]))
            continue
        kept.append(c)
    kept = [c for c in kept if c[0] <= last_start] or kept[:1]
    if p.erase and len(kept) > 1:
        cut = _rint(rng, 1, len(kept) - 1)
        when = kept[cut][0]
        kept = [*kept[:cut], (when, True, "erase")]
    return [(t, kind) for t, _, kind in kept]


# --------------------------------------------------------------------------- sessions

def _ids(customer_id: str | None = None, loyalty_card: str | None = None, email: str | None = None,
         phone: str | None = None, device_id: str | None = None,
         anonymous_id: str | None = None) -> Record:
    return {"customer_id": customer_id, "loyalty_card": loyalty_card, "email": email,
            "phone": phone, "device_id": device_id, "anonymous_id": anonymous_id}


class _Session:
    """One session being expanded: its clock, random stream and output list."""

    __slots__ = ("k", "out", "p", "prefix", "rng", "t")

    def __init__(self, p: Person, rng: random.Random, t: int, prefix: str) -> None:
        self.p = p
        self.rng = rng
        self.t = t
        self.prefix = prefix
        self.k = 0
        self.out: list[tuple[str, Record, bytes | None]] = []

    def eid(self) -> str:
        self.k += 1
        return f"{self.prefix}-{self.k}"

    def wait(self, lo_ms: int, hi_ms: int) -> None:
        self.t += lo_ms + int(self.rng.random() * (hi_ms - lo_ms))

    def product(self) -> Record:
        i = int(self.rng.random() * _N_PRODUCTS)
        sku, cat, _ = PRODUCTS[i]
        return {"sku": sku, "category": cat, "quantity": 1,
                "unit_price": _price_table(self.p.currency)[i]}

    def amount(self, items: list[Record]) -> float:
        total = sum(it["quantity"] * it["unit_price"] for it in items)
        return float(round(total)) if self.p.currency in _WHOLE_CURRENCIES else round(total, 2)

    # -- records ------------------------------------------------------------------------
    def web(self, ids: Record, type_: str, *, url: str | None = None, product: Record | None = None,
            query: str | None = None, order_id: str | None = None, items: list[Record] | None = None,
            amount: float | None = None, referrer: str | None = None) -> None:
        p = self.p
        self.out.append((WEB, {
            "event_id": self.eid(), "event_time": self.t, "identifiers": ids,
            "timezone": p.tz, "locale": p.locale, "type": type_, "url": url, "product": product,
            "query": query, "order_id": order_id, "items": items or [], "amount": amount,
            "currency": p.currency if amount is not None else None, "referrer": referrer,
        }, _key(ids)))

    def app(self, ids: Record, type_: str, *, push_token: str | None = None,
            push_enabled: bool | None = None, product: Record | None = None, query: str | None = None,
            order_id: str | None = None, items: list[Record] | None = None, amount: float | None = None,
            store_id: str | None = None, distance_m: float | None = None) -> None:
        p = self.p
        self.out.append((APP, {
            "event_id": self.eid(), "event_time": self.t, "identifiers": ids,
            "timezone": p.tz, "locale": p.locale, "type": type_, "push_token": push_token,
            "push_enabled": push_enabled, "product": product, "query": query, "order_id": order_id,
            "items": items or [], "amount": amount,
            "currency": p.currency if amount is not None else None,
            "store_id": store_id, "distance_m": distance_m,
        }, _key(ids)))

    def pos(self, ids: Record, type_: str, store_id: str, *, receipt_id: str | None = None,
            items: list[Record] | None = None, amount: float | None = None) -> None:
        p = self.p
        self.out.append((POS, {
            "event_id": self.eid(), "event_time": self.t, "identifiers": ids,
            "timezone": p.tz, "locale": p.locale, "type": type_, "store_id": store_id,
            "region": p.country, "receipt_id": receipt_id, "items": items or [], "amount": amount,
            "currency": p.currency if amount is not None else None,
        }, _key(ids)))

    def call(self, ids: Record, type_: str, *, reason: str | None = None, outcome: str | None = None,
             duration_s: int | None = None, order_id: str | None = None) -> None:
        p = self.p
        self.out.append((CALLCENTER, {
            "event_id": self.eid(), "event_time": self.t, "identifiers": ids,
            "timezone": p.tz, "locale": p.locale, "type": type_, "reason": reason,
            "outcome": outcome, "duration_s": duration_s, "order_id": order_id,
        }, _key(ids)))

    def message(self, topic: str, ids: Record, type_: str, message_id: str, campaign: str,
                url: str | None = None) -> None:
        """A gateway report (email, push, sms): gateways know the locale, not the zone."""
        self.out.append((topic, {
            "event_id": self.eid(), "event_time": self.t, "identifiers": ids,
            "timezone": None, "locale": self.p.locale, "type": type_, "message_id": message_id,
            "trigger_key": None, "campaign": campaign, "url": url,
        }, message_id.encode()))

    def privacy(self, ids: Record, type_: str, *, channel: str | None = None,
                purpose: str | None = None, granted: bool | None = None, source: str | None = None) -> None:
        self.out.append((PRIVACY, {
            "event_id": self.eid(), "event_time": self.t, "identifiers": ids, "type": type_,
            "consent_channel": channel, "consent_purpose": purpose, "granted": granted,
            "source": source,
        }, _key(ids)))


def _key(ids: Record) -> bytes | None:
    """Producers key by their strongest non-PII identifier (raw e-mail/phone never in keys)."""
    for kind in ("customer_id", "loyalty_card", "device_id", "anonymous_id"):
        value = ids[kind]
        if value is not None:
            return str(value).encode()
    return None


def _web_session(s: _Session, cookie: str | None = None, landing: str | None = None,
                 referrer: str | None = None) -> None:
    """Browse on one cookie: anonymous until a login (or signup), maybe cart and checkout."""
    p, rng = s.p, s.rng
    if not p.cookies:
        return
    if cookie is None:
        cookie = p.cookies[0] if rng.random() < 0.5 else _pick(rng, p.cookies)
    cust = p.customer_id if cookie in p.logged_cookies else None
    base = f"https://shop.example.com/{p.locale.lower()}"
    s.web(_ids(customer_id=cust, anonymous_id=cookie), "PAGE_VIEW", url=landing or base + "/",
          referrer=referrer if referrer is not None else _pick(rng, _REFERRERS))
    n_views = _rint(rng, 1, 5)
    login_at = -1
    if p.customer_id and cust is None and (p.signup_pending or rng.random() < 0.45):
        login_at = _rint(rng, 0, n_views)

    def login() -> str | None:
        s.wait(20 * SEC_MS, 90 * SEC_MS)
        assert p.customer_id is not None
        if p.signup_pending:
            s.web(_ids(customer_id=p.customer_id, email=p.email, anonymous_id=cookie), "SIGNUP",
                  url=base + "/account/signup")
            p.signup_pending = False
        else:
            s.web(_ids(customer_id=p.customer_id, anonymous_id=cookie), "LOGIN", url=base + "/login")
        p.logged_cookies.add(cookie)
        _sync_consent(s)
        return p.customer_id

    for i in range(n_views):
        if i == login_at:
            cust = login()
        s.wait(8 * SEC_MS, 150 * SEC_MS)
        if rng.random() < 0.25:
            s.web(_ids(customer_id=cust, anonymous_id=cookie), "SEARCH",
                  url=base + "/search", query=_pick(rng, _QUERIES))
            continue
        prod = s.product()
        s.web(_ids(customer_id=cust, anonymous_id=cookie), "PRODUCT_VIEW",
              url=f"{base}/p/{prod['sku']}", product=prod)
        if rng.random() < 0.3:
            s.wait(5 * SEC_MS, 60 * SEC_MS)
            line = dict(prod, quantity=_pick(rng, (1, 1, 1, 2)))
            p.cart.append(line)
            s.web(_ids(customer_id=cust, anonymous_id=cookie), "ADD_TO_CART",
                  url=f"{base}/cart", product=line)
    if login_at == n_views:
        cust = login()
    if len(p.cart) > 1 and rng.random() < 0.15:
        s.wait(5 * SEC_MS, 60 * SEC_MS)
        gone = p.cart.pop(int(rng.random() * len(p.cart)))
        s.web(_ids(customer_id=cust, anonymous_id=cookie), "REMOVE_FROM_CART",
              url=f"{base}/cart", product=gone)
    if p.cart and p.customer_id and rng.random() < 0.4:
        if cust is None:
            cust = login()
        s.wait(30 * SEC_MS, 180 * SEC_MS)
        items = [dict(it) for it in p.cart]
        amount = s.amount(items)
        order = f"O-{s.prefix}"
        s.web(_ids(customer_id=cust, anonymous_id=cookie), "CHECKOUT", url=f"{base}/checkout",
              order_id=order, items=items, amount=amount)
        s.wait(40 * SEC_MS, 240 * SEC_MS)
        s.web(_ids(customer_id=cust, email=p.email, anonymous_id=cookie), "PURCHASE",
              url=f"{base}/checkout/done", order_id=order, items=[dict(it) for it in items], amount=amount)
        p.cart.clear()
        p.last_order = order


def _store_purchase(s: _Session, store: str | None = None) -> None:
    """A till transaction on the loyalty card; the account shows only once the card is linked."""
    p, rng = s.p, s.rng
    if not p.loyalty_card:
        return
    cust: str | None = None
    if p.customer_id and p.card_mode == "linked" and not p.card_registered:
        cust = p.customer_id  # scans the app at the till: card + account together
        p.card_registered = True
    elif p.customer_id and p.card_registered and rng.random() < 0.3:
        cust = p.customer_id
    store = store or (p.home_store if rng.random() < 0.85
                      else f"ST-{p.country}-{int(rng.random() * STORES_PER_COUNTRY) + 1:03d}")
    if p.last_basket and rng.random() < 0.06:
        item = dict(_pick(rng, p.last_basket))
        s.pos(_ids(customer_id=cust, loyalty_card=p.loyalty_card), "STORE_RETURN", store,
              receipt_id=f"R-{s.prefix}-r", items=[item], amount=s.amount([item]))
        s.wait(2 * MIN_MS, 10 * MIN_MS)
    items = []
    for _ in range(_weighted(rng, (1, 2, 3, 4, 6), (30, 60, 80, 92, 100))):
        prod = s.product()
        prod["quantity"] = _pick(rng, (1, 1, 1, 2, 3))
        items.append(prod)
    s.pos(_ids(customer_id=cust, loyalty_card=p.loyalty_card), "STORE_PURCHASE", store,
          receipt_id=f"R-{s.prefix}-{s.k}", items=items, amount=s.amount(items))
    p.last_basket = items


def _app_session(s: _Session, device: str | None = None, force_login: bool = False) -> None:
    """Install (first time), open with push token, login, browse; maybe buy or pass near a store."""
    p, rng = s.p, s.rng
    if not p.devices:
        _web_session(s)
        return
    if device is None:
        others = [d for d in p.devices if d != p.shared_device] or p.devices
        device = _pick(rng, others)
    if device not in p.installed:
        s.app(_ids(device_id=device), "APP_INSTALL")
        p.installed.add(device)
        s.wait(10 * SEC_MS, 120 * SEC_MS)
    shared = device == p.shared_device
    cust = p.customer_id if device in p.logged_devices and not shared else None
    enabled = device in p.push_capable and p.push_ok
    token = f"tok-{device[:8]}{device[-12:]}" if enabled else None
    s.app(_ids(customer_id=cust, device_id=device), "APP_OPEN", push_token=token, push_enabled=enabled)
    if enabled and device not in p.push_ready:
        p.push_ready.append(device)
        s.privacy(_ids(customer_id=cust, device_id=device), "CONSENT_CHANGE", channel="PUSH",
                  purpose="marketing", granted=True, source="push_opt_in")
    if p.customer_id and cust is None and (force_login or shared or rng.random() < 0.6):
        s.wait(5 * SEC_MS, 60 * SEC_MS)
        cust = p.customer_id
        s.app(_ids(customer_id=cust, device_id=device), "LOGIN")
        p.logged_devices.add(device)
        _sync_consent(s)
    for _ in range(_rint(rng, 1, 4)):
        s.wait(5 * SEC_MS, 90 * SEC_MS)
        if rng.random() < 0.2:
            s.app(_ids(customer_id=cust, device_id=device), "SEARCH", query=_pick(rng, _QUERIES))
            continue
        prod = s.product()
        s.app(_ids(customer_id=cust, device_id=device), "PRODUCT_VIEW", product=prod)
        if rng.random() < 0.25:
            s.wait(5 * SEC_MS, 40 * SEC_MS)
            line = dict(prod, quantity=_pick(rng, (1, 1, 2)))
            p.cart.append(line)
            s.app(_ids(customer_id=cust, device_id=device), "ADD_TO_CART", product=line)
    if len(p.cart) > 1 and rng.random() < 0.12:
        s.wait(5 * SEC_MS, 40 * SEC_MS)
        gone = p.cart.pop(int(rng.random() * len(p.cart)))
        s.app(_ids(customer_id=cust, device_id=device), "REMOVE_FROM_CART", product=gone)
    if p.cart and cust is not None and rng.random() < 0.35:
        s.wait(30 * SEC_MS, 150 * SEC_MS)
        items = [dict(it) for it in p.cart]
        amount = s.amount(items)
        order = f"O-{s.prefix}"
        s.app(_ids(customer_id=cust, device_id=device), "CHECKOUT", order_id=order, items=items,
              amount=amount)
        s.wait(30 * SEC_MS, 150 * SEC_MS)
        s.app(_ids(customer_id=cust, device_id=device), "PURCHASE", order_id=order,
              items=[dict(it) for it in items], amount=amount)
        p.cart.clear()
        p.last_order = order
    elif rng.random() < 0.22:
        s.wait(5 * MIN_MS, 40 * MIN_MS)
        near = round(rng.uniform(15.0, 450.0), 1)
        s.app(_ids(customer_id=cust, device_id=device), "NEAR_STORE", store_id=p.home_store,
              distance_m=near)
        if p.loyalty_card and rng.random() < 0.5:
            s.wait(10 * MIN_MS, 45 * MIN_MS)
            _store_purchase(s, p.home_store)


def _card_register_session(s: _Session) -> None:
    """The moment a card used anonymously in store gets tied to the account."""
    p, rng = s.p, s.rng
    if not p.loyalty_card or not p.customer_id:
        return
    if rng.random() < 0.6:
        s.pos(_ids(customer_id=p.customer_id, loyalty_card=p.loyalty_card, email=p.email),
              "CARD_REGISTERED", p.home_store)
        p.card_registered = True
    else:  # a later till purchase where card and account are seen together
        p.card_mode, p.card_registered = "linked", False
        _store_purchase(s)


def _call_session(s: _Session) -> None:
    """A call identified by caller number; verified callers add the account."""
    p, rng = s.p, s.rng
    if not p.phone:
        return
    cust = p.customer_id if p.customer_id and rng.random() < 0.7 else None
    reason = _pick(rng, _CALL_REASONS)
    order = p.last_order if reason in ("ORDER_STATUS", "RETURN", "DELIVERY") else None
    s.call(_ids(customer_id=cust, phone=p.phone), "COMPLAINT" if rng.random() < 0.1 else "CALL_INBOUND",
           reason=reason, outcome=_pick(rng, _CALL_OUTCOMES), duration_s=_rint(rng, 45, 1500),
           order_id=order)
    if rng.random() < 0.08 and p.sms_ok:
        s.wait(30 * SEC_MS, 5 * MIN_MS)
        s.privacy(_ids(customer_id=cust, phone=p.phone), "CONSENT_CHANGE", channel="SMS",
                  purpose="marketing", granted=False, source="call_centre")
        p.sms_ok = False
    if rng.random() < 0.18:
        s.wait(1 * MIN_MS, 10 * MIN_MS)
        s.call(_ids(customer_id=p.customer_id, phone=p.phone), "CALLBACK_REQUESTED", reason=reason)
        s.wait(20 * MIN_MS, 150 * MIN_MS)
        s.call(_ids(customer_id=p.customer_id, phone=p.phone), "CALL_OUTBOUND", reason=reason,
               outcome=_pick(rng, _CALL_OUTCOMES), duration_s=_rint(rng, 60, 900), order_id=order)


def _email_session(s: _Session) -> None:
    """A campaign e-mail's life at the gateway; a click lands on the web with the cookie."""
    p, rng = s.p, s.rng
    if not p.email or not p.email_ok:
        if p.cookies:
            _web_session(s)
        return
    ids = _ids(email=p.email)
    msg, campaign = f"M-{s.prefix}", _pick(rng, _CAMPAIGNS)
    s.message(EMAIL, ids, "SENT", msg, campaign)
    s.wait(2 * SEC_MS, 90 * SEC_MS)
    if rng.random() < 0.015:
        s.message(EMAIL, _ids(email=p.email), "BOUNCED", msg, campaign)
        return
    s.message(EMAIL, _ids(email=p.email), "DELIVERED", msg, campaign)
    if rng.random() < 0.38:
        s.wait(1 * MIN_MS, 120 * MIN_MS)
        s.message(EMAIL, _ids(email=p.email), "OPENED", msg, campaign)
        if rng.random() < 0.4:
            s.wait(5 * SEC_MS, 3 * MIN_MS)
            url = (f"https://shop.example.com/{p.locale.lower()}/c/{_pick(rng, _CATEGORIES)[0]}"
                   f"?utm_source=email&utm_campaign={campaign}")
            s.message(EMAIL, _ids(email=p.email), "CLICKED", msg, campaign, url=url)
            if p.cookies:
                s.wait(1 * SEC_MS, 5 * SEC_MS)
                _web_session(s, landing=url, referrer="email")
                return
    if rng.random() < 0.025:
        s.wait(10 * SEC_MS, 5 * MIN_MS)
        s.message(EMAIL, _ids(email=p.email), "UNSUBSCRIBED", msg, campaign)
        s.wait(1 * SEC_MS, 30 * SEC_MS)
        s.privacy(_ids(email=p.email), "CONSENT_CHANGE", channel="EMAIL", purpose="marketing",
                  granted=False, source="email_unsubscribe")
        p.email_ok = False


def _push_session(s: _Session) -> None:
    """A push to a device that reported a token; opening it opens the app."""
    p, rng = s.p, s.rng
    if not p.push_ready or not p.push_ok:
        _app_session(s)
        return
    device = _pick(rng, p.push_ready)
    msg, campaign = f"M-{s.prefix}", _pick(rng, _CAMPAIGNS)
    s.message(PUSH, _ids(device_id=device), "SENT", msg, campaign)
    s.wait(1 * SEC_MS, 30 * SEC_MS)
    s.message(PUSH, _ids(device_id=device), "DELIVERED", msg, campaign)
    r = rng.random()
    if r < 0.3:
        s.wait(1 * MIN_MS, 90 * MIN_MS)
        s.message(PUSH, _ids(device_id=device), "OPENED", msg, campaign)
        s.wait(1 * SEC_MS, 5 * SEC_MS)
        cust = p.customer_id if device in p.logged_devices and device != p.shared_device else None
        s.app(_ids(customer_id=cust, device_id=device), "APP_OPEN",
              push_token=f"tok-{device[:8]}{device[-12:]}", push_enabled=True)
    elif r < 0.7:
        s.wait(1 * MIN_MS, 90 * MIN_MS)
        s.message(PUSH, _ids(device_id=device), "DISMISSED", msg, campaign)
    elif r < 0.715:
        s.wait(1 * MIN_MS, 30 * MIN_MS)
        s.message(PUSH, _ids(device_id=device), "UNSUBSCRIBED", msg, campaign)
        s.wait(1 * SEC_MS, 20 * SEC_MS)
        s.privacy(_ids(device_id=device), "CONSENT_CHANGE", channel="PUSH", purpose="marketing",
                  granted=False, source="push_settings")
        p.push_ok = False


def _sms_session(s: _Session) -> None:
    """An SMS campaign; STOP withdraws SMS consent on control.privacy."""
    p, rng = s.p, s.rng
    if not p.phone or not p.sms_ok:
        if rng.random() < 0.3:
            _call_session(s)
        return
    msg, campaign = f"M-{s.prefix}", _pick(rng, _CAMPAIGNS)
    s.message(SMS, _ids(phone=p.phone), "SENT", msg, campaign)
    s.wait(1 * SEC_MS, 20 * SEC_MS)
    if rng.random() < 0.02:
        s.message(SMS, _ids(phone=p.phone), "FAILED", msg, campaign)
        return
    s.message(SMS, _ids(phone=p.phone), "DELIVERED", msg, campaign)
    r = rng.random()
    if r < 0.12:
        s.wait(30 * SEC_MS, 60 * MIN_MS)
        s.message(SMS, _ids(phone=p.phone), "CLICKED", msg, campaign,
                  url=f"https://shop.example.com/s/{campaign}")
    elif r < 0.14:
        s.wait(30 * SEC_MS, 60 * MIN_MS)
        s.message(SMS, _ids(phone=p.phone), "REPLY", msg, campaign)
    elif r < 0.18:
        s.wait(30 * SEC_MS, 60 * MIN_MS)
        s.message(SMS, _ids(phone=p.phone), "STOP", msg, campaign)
        s.wait(1 * SEC_MS, 20 * SEC_MS)
        s.privacy(_ids(phone=p.phone), "CONSENT_CHANGE", channel="SMS", purpose="marketing",
                  granted=False, source="sms_stop")
        p.sms_ok = False


def _sync_consent(s: _Session) -> None:
    """The account's marketing choices (taken at sign-up), published by the CRM at the first login."""
    p = s.p
    if p.consent_synced or not p.customer_id:
        return
    p.consent_synced = True
    if p.email:
        s.privacy(_ids(customer_id=p.customer_id, email=p.email), "CONSENT_CHANGE", channel="EMAIL",
                  purpose="marketing", granted=p.email_ok, source="account")
    if p.phone:
        s.privacy(_ids(customer_id=p.customer_id, phone=p.phone), "CONSENT_CHANGE", channel="SMS",
                  purpose="marketing", granted=p.sms_ok, source="account")


def _prefs_session(s: _Session) -> None:
    """A preference-centre visit that flips one channel's consent."""
    p, rng = s.p, s.rng
    if not p.customer_id:
        return
    channel = _pick(rng, ("EMAIL", "PUSH", "SMS", "WEB"))
    if rng.random() < 0.2:
        purpose, granted = "personalisation", rng.random() < 0.5
    else:
        purpose = "marketing"
        current = {"EMAIL": p.email_ok, "PUSH": p.push_ok, "SMS": p.sms_ok}.get(channel, True)
        granted = not current
        if channel == "EMAIL":
            p.email_ok = granted
        elif channel == "PUSH":
            p.push_ok = granted
        elif channel == "SMS":
            p.sms_ok = granted and p.phone is not None
    s.privacy(_ids(customer_id=p.customer_id, email=p.email), "CONSENT_CHANGE", channel=channel,
              purpose=purpose, granted=granted, source="preference_centre")


def _erase_session(s: _Session) -> None:
    """Right to be forgotten: the person's last act; nothing follows it."""
    p, rng = s.p, s.rng
    if p.customer_id:
        ids = _ids(customer_id=p.customer_id, email=p.email, phone=p.phone)
    else:
        ids = _ids(loyalty_card=p.loyalty_card, phone=p.phone)
    s.privacy(ids, "ERASURE_REQUEST",
              source="call_centre" if rng.random() < 0.3 else "preference_centre")
    p.erased = True


_SESSIONS: dict[str, Callable[[_Session], None]] = {
    "web": _web_session,
    "app": _app_session,
    "store": _store_purchase,
    "card_register": _card_register_session,
    "call": _call_session,
    "email": _email_session,
    "push": _push_session,
    "sms": _sms_session,
    "prefs": _prefs_session,
    "erase": _erase_session,
}


def _expand(cfg: JourneyConfig, p: Person, sno: int, t: int, kind: str, tag: str) -> list[SimEvent]:
    """Turn one planned session into its events (all at or after ``t``)."""
    rng = random.Random(stream_seed(cfg.seed, p.index, sno))
    s = _Session(p, rng, t, f"{tag}-{p.index}-{sno}")
    if p.erased:
        return []
    if kind == "app_shared":
        _app_session(s, device=p.shared_device, force_login=True)
    else:
        _SESSIONS[kind](s)
    return [SimEvent(topic, key, rec, p.index) for topic, rec, key in s.out]


# --------------------------------------------------------------------------- the stream

def _arrivals(cfg: JourneyConfig) -> array[int]:
    """Every person's arrival packed as ``(offset << 24) | person``, sorted (8 bytes/person)."""
    packed = sorted(
        ((arrival_ms(cfg, i) - cfg.start_ms) << 24) | i for i in range(cfg.customers)
    )
    return array("q", packed)


def iter_events(cfg: JourneyConfig) -> Iterator[SimEvent]:
    """All events of the run, sorted by ``event_time`` (ties in a fixed order).

    Three time-ordered sources are merged: arrivals (materialise a person and
    plan their sessions), planned sessions (expand into events), and expanded
    events waiting to be emitted. A session's events are never earlier than
    its start, so emitting an event only once no arrival or session starts
    before it keeps the output sorted.
    """
    if cfg.customers <= 0:
        return
    tag = run_tag(cfg.seed)
    arrivals = _arrivals(cfg)
    n_arr = len(arrivals)
    inf = 1 << 62
    sessions: list[tuple[int, int, int, str, Person]] = []  # (t, person, sno, kind, person)
    pending: list[tuple[int, int, SimEvent]] = []  # (t, seq, event)
    seq = 0
    ai = 0
    low24 = (1 << 24) - 1
    start = cfg.start_ms
    t_arr = start + (arrivals[0] >> 24)
    heappush, heappop = heapq.heappush, heapq.heappop
    while True:
        t_ses = sessions[0][0] if sessions else inf
        t_src = t_arr if t_arr <= t_ses else t_ses
        while pending and pending[0][0] <= t_src:
            yield heappop(pending)[2]
        if t_src == inf:
            return
        if t_arr <= t_ses:  # someone arrives: plan their sessions
            person = arrivals[ai] & low24
            p = build_person(cfg, person)
            for sno, (t, kind) in enumerate(_plan(cfg, p, t_arr), start=1):
                heappush(sessions, (t, person, sno, kind, p))
            ai += 1
            t_arr = start + (arrivals[ai] >> 24) if ai < n_arr else inf
        else:  # a session starts: expand it into events
            t, _, sno, kind, p = heappop(sessions)
            for ev in _expand(cfg, p, sno, t, kind, tag):
                seq += 1
                heappush(pending, (ev.record["event_time"], seq, ev))


def generate(customers: int, seed: int = 1, start_ms: int = DEFAULT_START_MS,
             days: float = 14.0) -> Iterator[SimEvent]:
    """Shorthand for ``iter_events(JourneyConfig(...))`` with the default population mix."""
    return iter_events(JourneyConfig(customers=customers, seed=seed, start_ms=start_ms, days=days))


def sample_record(topic_key: str, seed: int, n: int, event_time: int) -> Record:
    """A valid record for ``topic_key`` that belongs to no simulated person.

    The malformed-record generator starts from these, so bad records never
    carry a real person's identifiers.
    """
    rng = random.Random(stream_seed(seed, n, 5 << 40))
    anon = f"bad-{run_tag(seed)}-{n}"
    p = Person(index=-1, kind="anonymous", tz="Europe/London", locale="en-GB", currency="GBP",
               country="UK", offset_ms=0, home_store="ST-UK-001")
    s = _Session(p, rng, event_time, f"x{run_tag(seed)}-{n}")
    ids = _ids(anonymous_id=anon, device_id=anon, loyalty_card=anon, customer_id=None)
    if topic_key == WEB:
        s.web(ids, "PRODUCT_VIEW", url="https://shop.example.com/en-gb/", product=s.product())
    elif topic_key == APP:
        s.app(ids, "SEARCH", query=_pick(rng, _QUERIES))
    elif topic_key == POS:
        items = [s.product()]
        s.pos(ids, "STORE_PURCHASE", "ST-UK-001", receipt_id=f"R-{s.prefix}", items=items,
              amount=s.amount(items))
    elif topic_key == CALLCENTER:
        s.call(ids, "CALL_INBOUND", reason="ORDER_STATUS", outcome="RESOLVED", duration_s=120)
    elif topic_key in (EMAIL, PUSH, SMS):
        s.message(topic_key, ids, "DELIVERED", f"M-{s.prefix}", "weekly_newsletter")
    elif topic_key == PRIVACY:
        s.privacy(ids, "CONSENT_CHANGE", channel="EMAIL", purpose="marketing", granted=True,
                  source="preference_centre")
    else:
        raise ValueError(f"unknown topic key {topic_key!r}; expected one of {TOPIC_KEYS}")
    return s.out[-1][1]
