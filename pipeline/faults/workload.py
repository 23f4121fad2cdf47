"""The fault suite's input: customers with one login each and a per-customer sequence number.

Each customer's marketing consent comes first (the privacy topic, phase one),
then their web events (phase two), every one keyed by the customer id and
carrying ``<run>-<customer>-<seq>`` as its event id. One identifier per
customer on the web means no merges, and one topic means each customer's
events reach the profile stage in sequence order whatever the crashes: so
with decisions taken as of each event's own time the triggers are a pure
function of the input, and a recomputation can say which must exist.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from pipeline.simulate.journeys import PRIVACY, WEB, SimEvent

ZONES = ("Europe/London", "Europe/Paris", "America/New_York", "America/Los_Angeles", "Asia/Kolkata",
         "Australia/Sydney", "UTC", "America/Sao_Paulo")
DAY_MS = 86_400_000
_SKUS = tuple(f"F{i:04d}" for i in range(500))


@dataclass(frozen=True)
class Workload:
    customers: int
    events: int  # web events over all customers (consents come on top: one or two per customer)
    seed: int
    end_ms: int  # the newest event time (ingest refuses events from the future)
    days: float = 14.0

    @property
    def tag(self) -> str:
        return f"f{self.seed}"

    def customer_id(self, c: int) -> str:
        return f"FC{self.seed}-{c:06d}"


def sequence_of(event_id: str) -> tuple[str, int]:
    """``<run>-<customer>-<seq>`` -> (customer id part, seq)."""
    head, _, seq = event_id.rpartition("-")
    return head, int(seq)


def _base(w: Workload, c: int, seq: int, t: int, tz: str) -> dict[str, Any]:
    return {"event_id": f"{w.tag}-{c:06d}-{seq:05d}", "event_time": t, "timezone": tz}


def _ids(cid: str, email: str | None = None, phone: str | None = None) -> dict[str, Any]:
    return {"customer_id": cid, "loyalty_card": None, "email": email, "phone": phone, "device_id": None,
            "anonymous_id": None}


def consents(w: Workload) -> list[SimEvent]:
    """Phase one: each customer's account consent (e-mail, and SMS for some), at the start of the span."""
    rng = random.Random(w.seed * 7919)
    start = w.end_ms - int(w.days * DAY_MS)
    out = []
    for c in range(w.customers):
        cid = w.customer_id(c)
        email, phone = f"c{c}.s{w.seed}@example.com", f"+4470{w.seed % 100:02d}{c:06d}"
        t = start - rng.randrange(1, DAY_MS)
        for seq, (channel, ids, granted) in enumerate((
                ("EMAIL", _ids(cid, email=email), rng.random() < 0.9),
                ("SMS", _ids(cid, phone=phone), rng.random() < 0.5))):
            out.append(SimEvent(PRIVACY, cid.encode(), {
                **{k: v for k, v in _base(w, c, seq, t + seq, "UTC").items() if k != "timezone"},
                "identifiers": ids, "type": "CONSENT_CHANGE", "consent_channel": channel,
                "consent_purpose": "marketing", "granted": granted, "source": "account"}, c))
    return out


def web_events(w: Workload) -> list[SimEvent]:
    """Phase two: sessions of login, views, cart, checkout and purchase; time-ordered over everyone."""
    rng = random.Random(w.seed)
    per = max(1, w.events // w.customers)
    start = w.end_ms - int(w.days * DAY_MS)
    out: list[SimEvent] = []
    for c in range(w.customers):
        cid = w.customer_id(c)
        tz = ZONES[c % len(ZONES)]
        n = per + (1 if c < w.events - per * w.customers else 0)
        t = start + rng.randrange(0, DAY_MS)
        seq = 2  # 0 and 1 are the consents
        cart: list[dict[str, Any]] = []
        ids = _ids(cid)
        kinds: list[str] = []
        while len(kinds) < n:
            kinds += ["LOGIN"] + ["PRODUCT_VIEW"] * rng.randint(1, 3)
            if rng.random() < 0.7:
                kinds.append("ADD_TO_CART")
                if rng.random() < 0.6:
                    kinds.append("CHECKOUT")
                    if rng.random() < 0.7:
                        kinds.append("PURCHASE")
        for kind in kinds[:n]:
            t += rng.randrange(10_000, 600_000) if kind != "LOGIN" else rng.randrange(DAY_MS // 4, 3 * DAY_MS)
            t = min(t, w.end_ms - 1000)
            sku = _SKUS[rng.randrange(len(_SKUS))]
            price = float(rng.choice((9.5, 25.0, 80.0, 120.0)))
            product = {"sku": sku, "category": "c" + sku[-1], "quantity": 1, "unit_price": price}
            rec: dict[str, Any] = {**_base(w, c, seq, t, tz), "identifiers": ids, "locale": "en-GB",
                                   "type": kind, "url": None, "product": None, "query": None,
                                   "order_id": None, "items": [], "amount": None, "currency": None,
                                   "referrer": None}
            if kind in ("PRODUCT_VIEW", "ADD_TO_CART"):
                rec["product"] = product
                if kind == "ADD_TO_CART":
                    cart.append(product)
            elif kind in ("CHECKOUT", "PURCHASE"):
                rec["items"] = list(cart) or [product]
                rec["amount"] = round(sum(i["unit_price"] for i in rec["items"]), 2)
                rec["currency"] = "GBP"
                rec["order_id"] = f"o-{w.tag}-{c}-{seq}"
                if kind == "PURCHASE":
                    cart = []
            out.append(SimEvent(WEB, cid.encode(), rec, c))
            seq += 1
    out.sort(key=lambda e: (e.event_time, e.record["event_id"]))
    return out
