"""Which broker round trips an event must wait for, so a replay resolves as paced traffic does.

The identity rules deliver most messages in memory, but the ones that must
survive a crash (``engine.BROKER_ONLY``) go through ``identity.messages`` and
come back on a later poll. Until then, the identifiers they are about still
resolve the old way: an e-mail a sign-up just linked to its customer still
resolves to its own profile, a cookie that just followed a login still to its
anonymous one. Paced traffic rarely notices (the next event of that person
comes much later than the round trip); a replay read as fast as it can be
does, on every new customer. So the identity loop counts, per identifier, the
messages in flight that change where it resolves (``Assign``, ``Resolution``),
and an event that carries such an identifier waits until they are back
(bounded by the caller).

Not waited for: a repeat (the identifier resolves there already), and the
longer chains of a merge of two existing clusters (a ``ClusterTransfer``
whose root then sends the ``Assign``): an event of that cluster can still
resolve the old way in a burst (README, "What a replay guarantees").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pipeline.identity.messages import Assign, Message, Resolution, Space
from pipeline.identity.model import LinkEvent, Ref
from pipeline.identity.state import IdentifierRecord, Record

Peek = Callable[[Space, Ref], Record | None]


def round_trip_refs(msg: Message, peek: Peek) -> frozenset[Ref]:
    """The identifier whose resolution ``msg`` changes when it is delivered (empty: none).

    An ``Assign`` (a cluster root's decision) or a ``Resolution`` (what a
    cookie follows resolves elsewhere now) for an identifier that does not
    resolve there yet; a repeat is not waited for.
    """
    if isinstance(msg, Assign | Resolution):
        rec = peek(Space.IDENT, msg.ref)
        if isinstance(rec, IdentifierRecord) and (rec.profile, rec.incarnation) == (msg.profile,
                                                                                     msg.incarnation):
            return frozenset()
        return frozenset((msg.ref,))
    return frozenset()


def returned_refs(msg: Message) -> frozenset[Ref]:
    """The identifier a round trip was counted under, from the message itself (as it comes back)."""
    if isinstance(msg, Assign | Resolution):
        return frozenset((msg.ref,))
    return frozenset()


def event_refs(event: LinkEvent) -> frozenset[Ref]:
    """The identifiers an event resolves by (it waits while one of them has a round trip under way)."""
    return frozenset(event.refs)


class RoundTrips:
    """Round trips under way, counted per ref (one thread: the identity loop's)."""

    def __init__(self) -> None:
        self._count: dict[Ref, int] = {}

    def __bool__(self) -> bool:
        return bool(self._count)

    def sent(self, refs: Iterable[Ref]) -> None:
        count = self._count
        for ref in refs:
            count[ref] = count.get(ref, 0) + 1

    def back(self, refs: Iterable[Ref]) -> None:
        """A message came back (one counted here, or one of another run or worker: then nothing)."""
        count = self._count
        for ref in refs:
            n = count.get(ref)
            if n is not None:
                if n <= 1:
                    del count[ref]
                else:
                    count[ref] = n - 1

    def blocking(self, refs: Iterable[Ref]) -> frozenset[Ref]:
        """Those of ``refs`` with a round trip under way."""
        count = self._count
        return frozenset(ref for ref in refs if ref in count)

    def give_up(self, refs: Iterable[Ref]) -> None:
        """Stop waiting for these (their messages went elsewhere, e.g. the partition moved)."""
        for ref in refs:
            self._count.pop(ref, None)

    def clear(self) -> None:
        self._count.clear()
