"""Checks of a JSON body that Litestar's decoder (msgspec) does not make, before it decodes the body.

* **Nesting** deeper than :data:`MAX_DEPTH` levels is refused: msgspec (like any recursive parser) raises
  ``RecursionError`` at about a thousand levels, which would otherwise be a 500.
* **Invalid UTF-8** is refused (msgspec lets a ``UnicodeDecodeError`` escape).
* **Duplicate object keys** are refused: RFC 8259 leaves their meaning open, msgspec keeps the last one and
  other parsers the first, so a proxy or an audit log could read a different body than the server does.

Everything else (syntax errors included) is left to Litestar, which answers 400 with msgspec's message.
All three are 400 problems with their own ``code``.

These checks run before any credential is looked up, so their cost must be linear in the body whatever it
holds (issue #11: a regular expression that skipped strings backtracked quadratically on ``[\\"\\"\\"...``
and held a worker 11 s for 64 KiB). Each step is a bounded number of passes made in C (``bytes.replace``,
``split``, ``translate``, ``count``, one possessive regular expression that never backtracks, msgspec's
decoder and encoder); Python runs per pair only to name a repeated key in a small body.
``tests/api/test_jsonbody.py`` times the worst bodies we could construct against parsing an ordinary one.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from nexmdm_api.errors import ApiError

#: deepest nesting of arrays and objects accepted in a body (a command payload needs a handful)
MAX_DEPTH = 32
#: a body that repeats a key names it when it holds at most this many objects and pairs (naming runs
#: Python per pair); a bigger one gets the same problem without the name
NAMED_UP_TO = 2000

#: ``[`` and ``{`` to ``[``, ``]`` and ``}`` to ``]``, everything else deleted
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[{]}")


def _nest(levels: int) -> re.Pattern[bytes]:
    """Balanced brackets at most ``levels`` deep. Possessive: a finished pair is never given back, so the
    match never backtracks over what it consumed and runs in linear time."""
    pattern = ""
    for _ in range(levels):
        pattern = r"(?:\[" + pattern + r"\])*+"
    return re.compile(pattern.encode())


_WITHIN_LIMIT = _nest(MAX_DEPTH)


def outside_strings(body: bytes) -> bytes:
    """``body`` without its JSON strings (contents and quotes), in a few linear passes.

    Escaped backslashes go first, then escaped quotes, so every remaining quote opens or closes a string;
    splitting on quotes leaves the text outside strings at the even positions. A backslash outside a
    string is a syntax error either way, so how it is read there does not matter.
    """
    if b'"' not in body:
        return body
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(unescaped.split(b'"')[::2])


def too_deep(outside: bytes) -> bool:
    """Whether a parser reading ``outside`` (a body without its strings) would nest past :data:`MAX_DEPTH`.

    Unclosed brackets (a truncated body) are closed at the end; then the longest run of balanced pairs at
    most ``MAX_DEPTH`` deep is matched from the start. It stops short of the end only at a stray closing
    bracket (where any parser stops with a syntax error: not deep) or at an opening one whose pair holds
    something deeper than the limit.
    """
    brackets = outside.translate(_BRACKETS, _NOT_BRACKETS)
    unclosed = brackets.count(b"[") * 2 - len(brackets)
    if unclosed > 0:
        brackets += b"]" * unclosed
    match = _WITHIN_LIMIT.match(brackets)
    end = match.end() if match else 0
    return brackets[end : end + 1] == b"["


def _first_repeated_key(text: str) -> str:
    """The first key repeated within one object, in the order the parser finishes objects."""
    objects: list[list[tuple[str, Any]]] = []
    json.loads(text, object_pairs_hook=objects.append)
    for pairs in objects:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                return key
            seen.add(key)
    return ""


def _short(key: str) -> str:
    text = json.dumps(key)
    return text if len(text) <= 40 else text[:37] + '..."'


def _strings(text: bytes) -> int:
    """Twice the number of strings in a valid JSON text: its quotes less the escaped ones (C passes)."""
    if b"\\" not in text:
        return text.count(b'"')
    unescaped = text.replace(b"\\\\", b"")
    return unescaped.count(b'"') - unescaped.count(b'\\"')


def _check_duplicates(body: bytes, text: str, outside: bytes) -> None:
    """Refuse a repeated key: decoding keeps one entry per distinct key, so the value written back holds
    fewer strings than the body (the repeated key at least) exactly when a key was repeated.

    Every key and string value of the body is one string of the decoded value and of msgspec's encoding of
    it; numbers, literals and escapes never add or remove one. Decoding and encoding run in C, the
    counting is a replace and two counts: no Python per value, and few allocations.
    """
    if outside.count(b":") < 2:
        return  # one key cannot repeat
    try:
        encoded = msgspec.json.encode(msgspec.json.decode(body))
    except (msgspec.DecodeError, RecursionError):
        return  # a syntax error: Litestar's decoder words it
    if _strings(encoded) != _strings(body):
        # naming the key runs Python per pair: only for a body small enough
        small = outside.count(b"{") + outside.count(b":") <= NAMED_UP_TO
        named = f"the key {_short(_first_repeated_key(text))}" if small else "an object key"
        raise ApiError(400, f"the JSON body repeats {named}", code="duplicate_json_key")


def check_json_body(body: bytes) -> None:
    """Raise a 400 ``ApiError`` for a body nested too deeply, not UTF-8, or with a repeated object key."""
    outside = outside_strings(body)
    # cheap first: a body with few brackets cannot be deep (a heartbeat has one pair)
    if outside.count(b"[") + outside.count(b"{") > MAX_DEPTH and too_deep(outside):
        raise ApiError(400, f"the JSON body is nested deeper than {MAX_DEPTH} levels", code="json_too_deep")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not valid UTF-8", code="invalid_utf8") from None
    _check_duplicates(body, text, outside)
