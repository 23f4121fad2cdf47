"""The identity codec: every message and record survives the wire with its exact types.

Exact types matter, not just ``==``: a handler given a list where it expects a
tuple, a tuple where it expects a ``Stamp``, or a re-ordered memo would still
compare equal here and there, yet behave differently. So every check below is
``assert_same`` (recursive type + value + dict order) and the simulation test
also runs each handler on decoded copies and requires the same output.

Timings (``timeit``, best of 6 rounds, this 2-core container while other test runs shared it;
the full table is in ``pipeline/identity/codec.py``), µs per call:

* ``Observe`` (3 refs, 300-byte payload): encode 0.9, decode 11.9 (10-12 of it ``LinkEvent()``)
* ``Resolved`` (300-byte payload): encode 0.5, decode 1.1
* ``IdentifierRecord`` of a cookie (20 memo entries, 2 followers): encode 5.2, decode 11.1
"""

from __future__ import annotations

import dataclasses
import random
import re
import typing
from dataclasses import replace
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.identity.codec import (
    CODEC_VERSION,
    MESSAGE_TAGS,
    RECORD_TAGS,
    IdentityCodecError,
    decode_message,
    decode_record,
    encode_message,
    encode_record,
    parse_state_key,
    state_key,
)
from pipeline.identity.messages import (
    Append,
    Assign,
    AssignAck,
    ClusterTransfer,
    ClusterTransferAck,
    EndAck,
    Follow,
    Handover,
    HandoverAck,
    Join,
    Leave,
    LeaveAck,
    Member,
    Message,
    Observe,
    ProfileEnd,
    Resolution,
    Resolved,
    Sighting,
    Space,
    Unfollow,
    UnfollowAck,
    Union,
)
from pipeline.identity.model import (
    INITIAL,
    Limits,
    LinkEvent,
    LinkRequest,
    MergeDecision,
    Refusal,
    RefusalReason,
    Stamp,
)
from pipeline.identity.rules import handle
from pipeline.identity.simulation import Faults, PartitionedSimulation
from pipeline.identity.state import (
    ClusterRecord,
    IdentifierRecord,
    MemberEntry,
    ProfileRecord,
    Record,
    new_record,
)

from .histories import LIMITS, journey_histories, random_histories

_LEAF = frozenset({str, int, bool, bytes, float, type(None)})
_FIELDS: dict[type, tuple[str, ...] | None] = {}


def _fields(cls: type) -> tuple[str, ...] | None:
    """Dataclass field names, cached: the simulation test calls this millions of times."""
    if cls not in _FIELDS:
        _FIELDS[cls] = (tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
                        if dataclasses.is_dataclass(cls) else None)
    return _FIELDS[cls]


def assert_same(a: Any, b: Any, path: str = "value", ordered: bool = True) -> None:
    """Equal, of identical types all the way down, compare=False fields too; dicts in the same order.

    ``ordered=False`` lets dicts differ in order (see the simulation test for why).
    """
    problem = _difference(a, b, ordered)
    assert problem is None, f"{path}{problem}"


def _difference(a: Any, b: Any, ordered: bool) -> str | None:
    """Where and how ``b`` differs from ``a``; the path is only built on the way out of a failure."""
    cls = type(a)
    if cls is not type(b):
        return f": {cls.__name__} != {type(b).__name__}"
    if cls in _LEAF:
        return None if a == b else f": {a!r} != {b!r}"
    names = _fields(cls)
    if names is not None:
        for name in names:
            problem = _difference(getattr(a, name), getattr(b, name), ordered)
            if problem is not None:
                return f".{name}{problem}"
    elif isinstance(a, dict):
        if a.keys() != b.keys():
            return f": keys {list(a)} != {list(b)}"
        if ordered and list(a) != list(b):
            return f": order {list(a)} != {list(b)}"
        keys_b = {k: k for k in b}
        for k, v in a.items():
            problem = _difference(k, keys_b[k], ordered) or _difference(v, b[k], ordered)
            if problem is not None:
                return f"[{k!r}]{problem}"
    elif isinstance(a, tuple | list):
        if len(a) != len(b):
            return f": {len(a)} != {len(b)} items"
        if _LEAF.issuperset(map(type, a)):  # fast path: the memo's (profile, incarnation) pairs
            same = a == b and list(map(type, a)) == list(map(type, b))
            return None if same else f": {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            problem = _difference(x, y, ordered)
            if problem is not None:
                return f"[{i}]{problem}"
    elif isinstance(a, set | frozenset):
        if a != b:
            return f": {a!r} != {b!r}"
        others = {y: y for y in b}
        for x in a:
            problem = _difference(x, others[x], ordered)
            if problem is not None:
                return f"{{{x!r}}}{problem}"
    elif a != b:
        return f": {a!r} != {b!r}"
    return None


def round_trip_message(msg: Message) -> Message:
    data = encode_message(msg)
    back = decode_message(data)
    assert_same(back, msg)
    if isinstance(msg, Observe | Resolved):  # compare=False: == alone would not notice a lost payload
        assert back.payload == msg.payload  # type: ignore[union-attr]
    assert encode_message(back) == data
    return back


def round_trip_record(rec: Record) -> Record:
    data = encode_record(rec)
    back = decode_record(data)
    assert_same(back, rec)
    assert back == rec
    assert encode_record(back) == data
    return back


# ---------------------------------------------------------------------------- hand-made instances
S1, S2 = Stamp(1_716_000_000_000, "evt-1"), Stamp(5, "e5")
REQUEST = LinkRequest(frozenset({"cust:C1", "card:K1", "email:m1"}), S2)
ASSIGN = Assign("card:K1", "cust:C1", "cust:C1", 7, "cust:C1#7", True)
END = ProfileEnd("card:K1", INITIAL, "cust:C1", "cust:C1#7", "cust:C1")
TRANSFER = ClusterTransfer("cust:C1", "card:K1",
                           (REQUEST, LinkRequest(frozenset({"card:K1", "phone:p"}), S1)),
                           frozenset({"card:K1", "phone:p", "email:m1"}), 4,
                           (("card:K1", "card:K1#4"), ("phone:p", INITIAL)), frozenset({"card:K1"}),
                           frozenset({"email:m1", "phone:p"}))

MESSAGES: list[Message] = [
    Observe(LinkEvent("e1", 10, ("cust:C1", "email:m1", "anon:x")), b"\x00canonical\xff" * 20),
    Observe(LinkEvent("e2", 0, ("anon:ünïcode",))),
    Sighting("anon:x", S1, "cust:C1", "dev:d"),
    Sighting("dev:d", S2, None, None),
    Join("email:m1", "cust:C1"),
    ASSIGN,
    replace(ASSIGN, adopt=False, gen=0, incarnation=INITIAL),
    Follow("cust:C1", "anon:x", S1),
    Unfollow("cust:C1", "anon:x", S2),
    UnfollowAck("anon:x", "cust:C1", S2),
    Resolution("anon:x", "cust:C1", "cust:C1", "cust:C1#7", 3),
    LeaveAck("anon:x", "anon:x", 2),
    Append("cust:C1", REQUEST),
    Union("card:K1", "cust:C1"),
    TRANSFER,
    ClusterTransfer("cust:C1", "card:K1", (), frozenset(), 0, (), frozenset(), frozenset()),
    ClusterTransferAck("card:K1", "cust:C1"),
    AssignAck("cust:C1", "card:K1", 7),
    EndAck("cust:C1", "card:K1", INITIAL),
    Resolved("cust:C1", "e1", "cust:C1#7", b'{"event_id": "e1"}'),
    Resolved("cust:C1", "e9", INITIAL),
    END,
    replace(END, reply_to=None),
    Handover("cust:C1", "cust:C1#7", "card:K1", INITIAL, frozenset({"e1", "e2", "e3"})),
    HandoverAck("card:K1", INITIAL, frozenset({"e1"})),
    Member("cust:C1", "anon:x", 1, S1),
    Member("cust:C1", "card:K1", 2, None),
    Leave("cust:C1", "anon:x", 3),
]


def test_every_message_type_has_a_codec_and_a_sample() -> None:
    union = set(typing.get_args(Message))
    assert len(union) == 21
    assert {type(m) for m in MESSAGES} == union
    assert set(MESSAGE_TAGS) == union
    tags = [*MESSAGE_TAGS.values(), *RECORD_TAGS.values()]
    assert len(set(tags)) == len(tags), "a type tag is used twice"


# The fields each codec function reads and writes, in wire order. A field added to one of these
# classes fails here first: give it a place in pipeline/identity/codec.py (at the end of the body,
# accepting the old length, or under a new CODEC_VERSION), then add it to this table.
CODED_FIELDS: dict[type, tuple[str, ...]] = {
    Observe: ("event", "payload"),
    LinkEvent: ("event_id", "event_time", "refs", "stable", "roaming", "device"),  # the last 3 derived
    Sighting: ("ref", "stamp", "stable_target", "device_target"), Join: ("ref", "cluster"),
    Assign: ("ref", "root", "profile", "gen", "incarnation", "adopt"), Follow: ("ref", "follower", "clock"),
    Unfollow: ("ref", "follower", "clock"), UnfollowAck: ("ref", "target", "clock"),
    Resolution: ("ref", "via", "profile", "incarnation", "seq"), LeaveAck: ("ref", "profile", "seq"),
    Append: ("cluster", "request"), Union: ("cluster", "other"),
    ClusterTransfer: ("cluster", "source", "requests", "members", "gen", "incarnations", "assigned",
                      "absorbed"),
    ClusterTransferAck: ("cluster", "target"), AssignAck: ("cluster", "ref", "gen"),
    EndAck: ("cluster", "profile", "incarnation"),
    Resolved: ("profile", "event_id", "incarnation", "payload"),
    ProfileEnd: ("profile", "incarnation", "target", "target_incarnation", "reply_to"),
    Handover: ("profile", "incarnation", "source", "source_incarnation", "events"),
    HandoverAck: ("profile", "source_incarnation", "events"), Member: ("profile", "ref", "seq", "since"),
    Leave: ("profile", "ref", "seq"), LinkRequest: ("refs", "stamp"),
    Refusal: ("event_time", "event_id", "ref", "anchor", "held_by", "reason", "kind"),
    MergeDecision: ("source", "source_incarnation", "target", "target_incarnation"),
    IdentifierRecord: ("ref", "profile", "incarnation", "seq", "gen", "cluster", "stable_seen", "device_seen",
                       "target", "via", "via_seq", "merged_into", "fanout", "storm", "followers", "memo",
                       "pending_unfollow", "pending_leave", "moves"),
    ClusterRecord: ("ref", "forwarded_to", "requests", "members", "gen", "incarnations", "assigned",
                    "refusals", "absorbed", "assign_outbox", "end_outbox", "transfer"),
    ProfileRecord: ("ref", "ended", "folded", "outbox", "members", "merges"),
}


def test_the_codec_knows_every_field_of_every_type() -> None:
    for cls, names in CODED_FIELDS.items():
        assert tuple(f.name for f in dataclasses.fields(cls)) == names, cls.__name__  # type: ignore[arg-type]
    assert Stamp._fields == ("time", "event_id") and MemberEntry._fields == ("seq", "active", "since")


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_messages_round_trip_with_exact_types_and_payloads(msg: Message) -> None:
    round_trip_message(msg)


def test_observe_payload_and_stamp_types_survive() -> None:
    back = decode_message(encode_message(MESSAGES[0]))
    assert isinstance(back, Observe) and back.payload == MESSAGES[0].payload  # type: ignore[union-attr]
    assert type(back.event.refs) is tuple and back.event.stamp == Stamp(10, "e1")
    follow = decode_message(encode_message(Follow("cust:C1", "anon:x", S1)))
    assert type(follow.clock) is Stamp  # type: ignore[union-attr]


def full_identifier() -> IdentifierRecord:
    return IdentifierRecord(
        "anon:x", profile="cust:C1", incarnation="cust:C1#7", seq=4, gen=0,
        stable_seen=(S1, "cust:C1"), device_seen=(S2, "dev:d"), target="cust:C1", via="cust:C1", via_seq=9,
        merged_into=("cust:C1", "cust:C1#7"), fanout={"cust:C1": S1, "email:m": S2},
        storm=(S1, "email:m"), followers={"anon:y": (S2, True), "anon:z": (S1, False)},
        # arrival order, not sorted, and more than one resolution: eviction relies on the order
        memo={"e9": ("anon:x", INITIAL), "e1": ("cust:C1", "cust:C1#7"), "e5": ("anon:x", INITIAL),
              "e3": ("cust:B", "cust:B#2")},
        pending_unfollow={"cust:B": S2}, pending_leave={"anon:x": 1, "cust:B": 3})


def full_cluster() -> ClusterRecord:
    other = LinkRequest(frozenset({"card:K1", "phone:p"}), S1)
    refusal = Refusal(5, "e5", "card:K1", "cust:C2", "cust:C1", RefusalReason.CARD_OWNED, "card")
    return ClusterRecord(
        "cust:C1", requests={REQUEST.refs: REQUEST, other.refs: other},
        members={"cust:C1", "card:K1", "phone:p"},
        gen=7, incarnations={"cust:C1": "cust:C1#7", "phone:p": INITIAL},
        assigned={"card:K1": ("cust:C1", "cust:C1#7"), "phone:p": ("phone:p", INITIAL)},
        refusals=(refusal, replace(refusal, reason=RefusalReason.ROAMING_FANOUT, kind="anon")),
        absorbed={"card:K1", "email:m1"},
        assign_outbox={"card:K1": ASSIGN, "phone:p": replace(ASSIGN, ref="phone:p", adopt=False)},
        end_outbox={("card:K1", INITIAL): END, ("email:m1", "email:m1#2"): replace(END, profile="email:m1",
                                                                                   incarnation="email:m1#2")},
        transfer=TRANSFER)


def full_profile() -> ProfileRecord:
    return ProfileRecord(
        "cust:C1", ended={INITIAL: ("cust:C1", "cust:C1#3"), "cust:C1#3": ("cust:A", "cust:A#9")},
        folded={"cust:C1#9": {"e1", "e2"}, "cust:C1#3": set()}, outbox={"cust:C1#3": {"e7"}},
        members={"anon:x": MemberEntry(3, True, S1), "card:K1": MemberEntry(1, False, None)},
        merges=[MergeDecision("cust:C1", "cust:C1#3", "cust:A", "cust:A#9")])


def unusual_cluster() -> ClusterRecord:
    """Shapes the rules never produce but a record may hold: decoding must not 'repair' them."""
    rec = ClusterRecord("card:K1", forwarded_to="cust:C1")  # forwarded: members empty, no ref added
    rec.requests = {frozenset({"x"}): REQUEST}  # key that is not the request's own refs
    rec.assign_outbox = {"other:key": ASSIGN}
    return rec


RECORDS: list[Record] = [
    full_identifier(), full_cluster(), full_profile(), unusual_cluster(),
    *(new_record(space, ref) for space in Space for ref in ("cust:C1", "anon:x")),
    IdentifierRecord("dev:d", memo={f"e{i}": ("cust:C1", "cust:C1#1") for i in range(100, 0, -1)}),
]


@pytest.mark.parametrize("rec", RECORDS, ids=lambda r: f"{type(r).__name__}-{r.ref}")
def test_records_round_trip_with_exact_types_and_order(rec: Record) -> None:
    round_trip_record(rec)


def test_decoding_does_not_apply_constructor_defaults() -> None:
    forwarded = decode_record(encode_record(unusual_cluster()))
    assert isinstance(forwarded, ClusterRecord) and forwarded.members == set()
    rec = IdentifierRecord("cust:C1")
    rec.profile = ""  # __post_init__ would turn "" into the ref
    assert decode_record(encode_record(rec)) == rec


def test_decoded_records_keep_memo_order_and_nested_types() -> None:
    back = decode_record(encode_record(full_identifier()))
    assert isinstance(back, IdentifierRecord)
    assert list(back.memo) == ["e9", "e1", "e5", "e3"]
    assert type(back.stable_seen[0]) is Stamp and type(back.followers["anon:y"][0]) is Stamp  # type: ignore[index]
    cluster = decode_record(encode_record(full_cluster()))
    assert isinstance(cluster, ClusterRecord) and type(next(iter(cluster.requests))) is frozenset
    assert type(cluster.refusals[0].reason) is RefusalReason and type(cluster.members) is set
    profile = decode_record(encode_record(full_profile()))
    assert isinstance(profile, ProfileRecord) and type(profile.members["anon:x"]) is MemberEntry


def test_sets_encode_the_same_whatever_their_insertion_order() -> None:
    a, b = full_profile(), full_profile()
    b.folded["cust:C1#9"] = set(reversed(sorted(a.folded["cust:C1#9"] | {f"x{i}" for i in range(50)})))
    a.folded["cust:C1#9"] = set(sorted(b.folded["cust:C1#9"]))
    assert encode_record(a) == encode_record(b)


# ---------------------------------------------------------------------------- generated runs
FAULTS = st.sampled_from([Faults(), Faults(duplicate=0.3, crash=0.1, commit=0.2, inject=0.6)])


@settings(max_examples=20, deadline=None)
@given(history=random_histories(max_events=16) | journey_histories(max_people=3), limits=LIMITS,
       partitions=st.integers(1, 5), seed=st.integers(0, 2**32 - 1), faults=FAULTS)
def test_everything_a_faulty_run_sends_and_keeps_round_trips(
        history: list[dict[str, Any]], limits: dict[str, int] | None, partitions: int, seed: int,
        faults: Faults) -> None:
    """Every delivered message and every record it lands on (outboxes full mid-run) round-trips.

    Each handler also runs on the decoded message and record, and must send the same messages and
    leave the same record. Sets are written sorted, so a decoded set may iterate in another order
    than the original; what a handler derives from iterating one (the order of its output, of
    dicts it rebuilds) may differ, and nothing depends on it: messages are delivered in any order
    anyway. The one order the rules rely on, the memo's, is compared exactly.
    """
    seen: set[type] = set()

    def through_the_codec(msg: Message, rec: Record, lim: Limits) -> list[Message]:
        if isinstance(msg, Observe):  # give events a payload, so Resolved carries one through the stage
            msg = replace(msg, payload=f'{{"event_id": "{msg.event.event_id}"}}'.encode())
        seen.add(type(msg))
        wire, stored = round_trip_message(msg), round_trip_record(rec)
        expected = handle(msg, rec, lim)
        out = handle(wire, stored, lim)
        # the encoding is canonical (sets sorted), so it orders equal messages the same way
        assert_same(sorted(out, key=encode_message), sorted(expected, key=encode_message), "output")
        assert_same(stored, rec, "record after", ordered=False)
        if isinstance(rec, IdentifierRecord):
            assert list(stored.memo) == list(rec.memo)  # type: ignore[union-attr]
        return expected

    order = list(history)
    random.Random(seed).shuffle(order)
    sim = PartitionedSimulation(partitions, limits=limits, seed=seed, faults=faults,
                                handler=through_the_codec)
    sim.run(order)
    assert Observe in seen and Resolved in seen
    for space in Space:
        for rec in sim.records(space):
            round_trip_record(rec)


# ---------------------------------------------------------------------------- malformed input
def decodes_or_rejects(data: bytes) -> None:
    """Garbage either is rejected with IdentityCodecError or decodes to something the codec can write."""
    for decode, encode in ((decode_message, encode_message), (decode_record, encode_record)):
        try:
            value = decode(data)
        except IdentityCodecError:
            continue
        assert decode(encode(value)) == value  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64))
def test_random_bytes_raise_only_codec_errors(data: bytes) -> None:
    decodes_or_rejects(data)


LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=5),
                   st.binary(max_size=5), st.floats(allow_nan=False), st.just(()), st.just({}),
                   st.just({"k": 1}), st.just((1, "a")))


def _leaves(value: Any, path: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    if isinstance(value, list | tuple):
        return [path] + [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))]
    return [path]


def _put(value: Any, path: tuple[int, ...], new: Any) -> Any:
    if not path:
        return new
    items = list(value)
    items[path[0]] = _put(items[path[0]], path[1:], new)
    return items


@settings(max_examples=300, deadline=None)
@given(sample=st.sampled_from([*MESSAGES, *RECORDS]), data=st.data())
def test_a_valid_value_with_any_part_replaced_raises_only_codec_errors(sample: Any,
                                                                       data: st.DataObject) -> None:
    encoded = encode_message(sample) if sample in MESSAGES else encode_record(sample)
    tree = msgpack.unpackb(encoded, raw=False)
    path = data.draw(st.sampled_from(_leaves(tree)))
    if data.draw(st.booleans()) and path:  # drop an item instead: wrong arity
        parent = list(_get(tree, path[:-1]))
        del parent[path[-1]]
        mutated = _put(tree, path[:-1], parent)
    else:
        mutated = _put(tree, path, data.draw(LEAVES))
    decodes_or_rejects(msgpack.packb(mutated, use_bin_type=True))


def _get(value: Any, path: tuple[int, ...]) -> Any:
    for i in path:
        value = value[i]
    return value


def test_truncated_values_are_rejected() -> None:
    for value in (*MESSAGES, *RECORDS):
        data = encode_message(value) if value in MESSAGES else encode_record(value)  # type: ignore[arg-type]
        decode = decode_message if value in MESSAGES else decode_record
        for end in range(len(data)):
            with pytest.raises(IdentityCodecError):
                decode(data[:end])


def test_versions_tags_and_shapes_are_checked_with_a_useful_message() -> None:
    body = msgpack.unpackb(encode_message(Join("email:m", "cust:C")), raw=False)[2]
    pack = lambda value: msgpack.packb(value, use_bin_type=True)  # noqa: E731
    cases = [
        (pack([CODEC_VERSION + 1, MESSAGE_TAGS[Join], body]), "version"),
        (pack([CODEC_VERSION, 99, body]), "unknown type tag 99"),
        (pack([CODEC_VERSION, MESSAGE_TAGS[Join], [*body, "extra"]]), "malformed Join"),
        (pack([CODEC_VERSION, MESSAGE_TAGS[Join], ["email:m", 5]]), "malformed Join"),
        (pack([CODEC_VERSION, MESSAGE_TAGS[Join]]), "expected [version, tag, body]"),
        (pack({"v": 1}), "expected [version, tag, body]"),
        (encode_record(full_profile()), "unknown type tag 66"),  # a record is not a message
        (b"\xc1", "not msgpack"),
        (encode_message(Join("email:m", "cust:C")) + b"\x00", "not msgpack"),
        ("not bytes", "not msgpack"),
        (pack([CODEC_VERSION, MESSAGE_TAGS[Observe], ["e", 1, ["cust:A", "cust:B"], b""]]),
         "malformed Observe"),
        (pack([CODEC_VERSION, MESSAGE_TAGS[Observe], ["e", 1, ["nope:x"], b""]]), "malformed Observe"),
        (pack([CODEC_VERSION, MESSAGE_TAGS[Observe], ["e", 1, [], b""]]), "malformed Observe"),
    ]
    for data, message in cases:
        with pytest.raises(IdentityCodecError, match=re.escape(message)):
            decode_message(data)  # type: ignore[arg-type]
    with pytest.raises(IdentityCodecError, match="unknown type tag 11"):
        decode_record(encode_message(Union("a:b", "c:d")))
    bad_reason = msgpack.unpackb(encode_record(full_cluster()), raw=False)
    bad_reason[2][7][0][5] = "made_up_reason"
    with pytest.raises(IdentityCodecError, match="malformed ClusterRecord"):
        decode_record(pack(bad_reason))


def test_encoding_something_else_is_a_codec_error_and_leaves_the_encoder_usable() -> None:
    with pytest.raises(IdentityCodecError, match="not an identity message"):
        encode_message(full_profile())  # type: ignore[arg-type]
    with pytest.raises(IdentityCodecError, match="not an identity record"):
        encode_record(ASSIGN)  # type: ignore[arg-type]
    with pytest.raises(IdentityCodecError, match="cannot encode Resolved"):
        encode_message(Resolved("cust:C", "e", INITIAL, object()))  # type: ignore[arg-type]
    assert encode_message(Union("a:b", "c:d")) == msgpack.packb(
        [CODEC_VERSION, MESSAGE_TAGS[Union], ["a:b", "c:d"]], use_bin_type=True)


# ---------------------------------------------------------------------------- keys
@pytest.mark.parametrize("space", list(Space))
@pytest.mark.parametrize("ref", ["cust:C1", "email:9f86d0", "anon:ü|x:y"])
def test_state_keys_round_trip(space: Space, ref: str) -> None:
    key = state_key(space, ref)
    assert key.startswith(space.value[0].encode() + b"|")
    assert parse_state_key(key) == (space, ref)


@pytest.mark.parametrize("key", [b"", b"i", b"i|", b"x|cust:C1", b"ic|cust:C1", b"i|\xff\xfe", "i|cust:C1"])
def test_malformed_state_keys_are_rejected(key: bytes) -> None:
    with pytest.raises(IdentityCodecError):
        parse_state_key(key)
