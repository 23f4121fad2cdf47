"""Identity stitching: identifiers -> one profile per person (issue 3), the pure core.

No Kafka or Faust here, only the rules and their proofs:

* ``model``      refs, link events, refusal reasons, limits (plain data);
* ``reference``  the rules as a single-process union-find: the specification;
* ``decide``     the same stable-identifier rules for one cluster (a second coding);
* ``messages``   what partitions send each other; ``state`` what they keep;
* ``rules``      the partitioned handlers (record + message -> messages);
* ``simulation`` N in-memory partitions with random interleavings, duplicates, crashes;
* ``evaluate``   pairwise precision/recall against the simulator's ground truth.
"""
