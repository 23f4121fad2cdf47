"""Hypothesis strategies: multi-channel event histories for the identity property tests.

Two shapes, because each finds what the other misses:

* ``random_histories``: tiny identifier pools and 1-4 identifiers per event, so
  almost every event links something and conflicts, limits and ties in
  event time are everywhere;
* ``journey_histories``: people doing recognisable things (store visits with a
  card long before it is registered online, web and app logins, a family
  tablet two people log in on, calls, e-mails), plus deliberate conflicting
  claims (someone else's card, e-mail or phone used with another account),
  and now and then a bot: one cookie or kiosk device shared by many accounts
  (the storm guard's case, ``roaming_fanout``).

Both add redeliveries: copies of earlier events, same id and content.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

Event = dict[str, Any]
FIELDS = ("customer_id", "loyalty_card", "email_hash", "phone_hash", "device_id", "anonymous_id")

LIMITS = st.sampled_from([None, {"card": 1}, {"loyalty_card": 2, "email": 1, "phone": 1},
                          {"card": 1, "email": 1, "phone": 1, "anon": 1, "dev": 1},
                          {"roaming_fanout": 1}, {"card": 1, "roaming_fanout": 2},
                          {"email": 1, "roaming_fanout": 3}])


def _redeliver(draw: st.DrawFn, events: list[Event]) -> list[Event]:
    if not events:
        return events
    return events + draw(st.lists(st.sampled_from(events), max_size=4))


@st.composite
def random_histories(draw: st.DrawFn, max_events: int = 30) -> list[Event]:
    sizes = {f: draw(st.integers(1, 4)) for f in FIELDS}
    events: list[Event] = []
    for i in range(draw(st.integers(1, max_events))):
        fields = draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4, unique=True))
        event: Event = {"event_id": f"e{i}", "event_time": draw(st.integers(0, 30))}
        for f in fields:
            event[f] = f"{f[:2]}{draw(st.integers(0, sizes[f] - 1))}"
        events.append(event)
    return _redeliver(draw, events)


_STEPS = ("store", "store", "browse", "web_login", "app_open", "app_login", "register_card",
          "email", "call", "verified_call", "signup", "pos_phone", "scan_in_app", "tablet", "tablet_login")
_EARLY, _LATE = (0, 40), (30, 100)


@st.composite
def journey_histories(draw: st.DrawFn, max_people: int = 4) -> list[Event]:
    events: list[Event] = []

    def emit(lo_hi: tuple[int, int], **ids: str) -> None:
        t = draw(st.integers(*lo_hi))
        events.append({"event_id": f"e{len(events)}", "event_time": t, **ids})

    people = draw(st.integers(1, max_people))
    for p in range(people):
        cust, card, email, phone = f"C{p}", f"K{p}", f"m{p}", f"p{p}"
        cookie = f"ck{p}-{draw(st.integers(0, 1))}"
        device = f"d{p}"
        for step in draw(st.lists(st.sampled_from(_STEPS), min_size=1, max_size=8)):
            if step == "store":  # card at the till, long before it is linked online
                emit(_EARLY, loyalty_card=card)
            elif step == "browse":
                emit(_EARLY, anonymous_id=cookie)
            elif step == "web_login":
                emit(_LATE, customer_id=cust, anonymous_id=cookie)
            elif step == "app_open":
                emit(_EARLY, device_id=device)
            elif step == "app_login":
                emit(_LATE, customer_id=cust, device_id=device)
            elif step == "register_card":
                emit(_LATE, customer_id=cust, loyalty_card=card, email_hash=email)
            elif step == "email":
                emit(_EARLY, email_hash=email)
            elif step == "call":
                emit(_EARLY, phone_hash=phone)
            elif step == "verified_call":
                emit(_LATE, customer_id=cust, phone_hash=phone)
            elif step == "signup":
                emit(_LATE, customer_id=cust, email_hash=email, anonymous_id=cookie)
            elif step == "pos_phone":  # phone typed at the till with the card
                emit(_EARLY, loyalty_card=card, phone_hash=phone)
            elif step == "scan_in_app":
                emit(_LATE, loyalty_card=card, device_id=device)
            elif step == "tablet":
                emit((0, 100), device_id="family-tablet")
            else:  # "tablet_login": the shared device follows the most recent login
                emit((0, 100), customer_id=cust, device_id="family-tablet")
    claims = st.tuples(st.integers(0, people - 1), st.integers(0, people - 1),
                       st.sampled_from(["loyalty_card", "email_hash", "phone_hash"]))
    for claimer, victim, field in draw(st.lists(claims, max_size=3)):
        value = {"loyalty_card": "K", "email_hash": "m", "phone_hash": "p"}[field] + str(victim)
        emit((0, 100), customer_id=f"C{claimer}", **{field: value})
    bot_field = draw(st.sampled_from([None, None, "anonymous_id", "device_id"]))
    if bot_field is not None:  # one bot identifier seen with many people's identifiers, and on its own
        for p in draw(st.lists(st.integers(0, people - 1), min_size=1, max_size=8)):
            stable = draw(st.sampled_from([{"customer_id": f"C{p}"}, {"email_hash": f"m{p}"},
                                           {"loyalty_card": f"K{p}", "customer_id": f"C{p}"}]))
            emit((0, 100), **stable, **{bot_field: "bot"})
        for _ in range(draw(st.integers(0, 3))):
            extra = {"anonymous_id": f"ck-bot-{draw(st.integers(0, 1))}"} if bot_field == "device_id" else {}
            emit((0, 100), **{bot_field: "bot"}, **extra)
    return _redeliver(draw, events)


histories = random_histories() | journey_histories()
