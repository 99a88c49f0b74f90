"""Checks of a JSON body that Litestar's decoder (msgspec) does not make, before it decodes the body.

* **Nesting** deeper than :data:`MAX_DEPTH` levels is refused: msgspec (like any recursive parser) raises
  ``RecursionError`` at about a thousand levels, which would otherwise be a 500.
* **Invalid UTF-8** is refused (msgspec lets a ``UnicodeDecodeError`` escape).
* **Duplicate object keys** are refused: RFC 8259 leaves their meaning open, msgspec keeps the last one and
  other parsers the first, so a proxy or an audit log could read a different body than the server does.

Everything else (syntax errors included) is left to Litestar, which answers 400 with msgspec's message.
All three are 400 problems with their own ``code``.
"""

from __future__ import annotations

import json
import operator
import re
from itertools import accumulate, count
from typing import Any

from nexmdm_api.errors import ApiError

#: deepest nesting of arrays and objects accepted in a body (a command payload needs a handful)
MAX_DEPTH = 32

_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
#: opening brackets to 2, closing ones to 0, everything else deleted: after k brackets, the running sum
#: minus k is the depth
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[{]}")


def nesting_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in ``body``, skipping brackets inside strings.

    The loops run in C (``re``, ``bytes.translate``, ``itertools``): 64 KiB of brackets take a few
    milliseconds, and only bodies with more than ``MAX_DEPTH`` brackets are scanned.
    """
    steps = _STRINGS.sub(b"", body).translate(_STEPS, _NOT_BRACKETS)
    return max(map(operator.sub, accumulate(steps), count(1)), default=0)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ApiError(400, f"the JSON body repeats the key {_short(key)}", code="duplicate_json_key")
            seen.add(key)
    return result


def _short(key: str) -> str:
    text = json.dumps(key)
    return text if len(text) <= 40 else text[:37] + '..."'


def check_json_body(body: bytes) -> None:
    """Raise a 400 ``ApiError`` for a body nested too deeply, not UTF-8, or with a repeated object key."""
    # cheap first: a body with few brackets cannot be deep (a heartbeat has one pair)
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and nesting_depth(body) > MAX_DEPTH:
        raise ApiError(400, f"the JSON body is nested deeper than {MAX_DEPTH} levels", code="json_too_deep")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not valid UTF-8", code="invalid_utf8") from None
    try:
        json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):
        return  # a syntax error (or a number stdlib will not parse): Litestar's decoder words it
