"""Campaign ids: ``cmp_`` + a 26-character ULID (time-ordered, so keyset paging by id is by age)."""

from __future__ import annotations

import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
PREFIX = "cmp_"
#: what a campaign id looks like (the API's path and query parameters declare it)
PATTERN = r"^cmp_[0-9A-Z]{26}$"


def ulid(now_ms: int | None = None) -> str:
    """48 bits of milliseconds then 80 random bits, in Crockford base32 (the ULID spec's layout)."""
    value = ((now_ms if now_ms is not None else time.time_ns() // 1_000_000) << 80) | int.from_bytes(
        os.urandom(10), "big"
    )
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def new_campaign_id() -> str:
    return PREFIX + ulid()


#: approval ids: ``apr_`` + a ULID, like campaigns'
APPROVAL_PREFIX = "apr_"
APPROVAL_PATTERN = r"^apr_[0-9A-Z]{26}$"


def new_approval_id() -> str:
    return APPROVAL_PREFIX + ulid()
