"""Erasure markers: what a stage keeps of an erased person, a keyed hash and the request time.

After an erasure a stage may still receive pieces of the erased past (a
replay after a crash, a late transfer). It drops anything no newer than the
request. The marker holds no identifier: the key is a keyed BLAKE2b of the
ref (the worker's PII hash key), so it can be matched but not read.
"""

from __future__ import annotations

import hashlib


def erasure_marker(prefix: bytes, ref: str, secret: bytes) -> bytes:
    digest = hashlib.blake2b(ref.encode(), key=secret[:64], digest_size=16)
    return prefix + digest.hexdigest().encode()
