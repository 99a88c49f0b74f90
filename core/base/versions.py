"""Agent versions as sortable keys, so that ``@agent_version<2.1.0`` is an indexed range in SQL.

Numeric dot segments compare as numbers (a missing segment is 0: ``2.1 == 2.1.0``), ``-pre`` sorts
before its release, ``+build`` is ignored. The key is made of digits only, so it sorts the same under
every collation (PostgreSQL's locale-aware ``en_US`` would otherwise skip punctuation):

* each segment is ``1`` followed by the number in 10 digits (trailing zero segments dropped);
* then ``01`` for a release, or ``00`` followed by each character of the pre-release as 3 digits.

Anything else (``beta``, ``1..2``) is not a version: no key, and it never satisfies ``< <= > >=``.
"""

from __future__ import annotations

import re

_VERSION_RE = re.compile(r"v?(\d{1,10}(?:\.\d{1,10}){0,15})(?:-([0-9A-Za-z.-]{1,40}))?(?:\+[0-9A-Za-z.-]*)?")


def version_key(version: str | None) -> str | None:
    """The sortable key of ``version``, or ``None`` when it is not a version."""
    if not version:
        return None
    match = _VERSION_RE.fullmatch(version)
    if match is None:
        return None
    segments = [int(part) for part in match.group(1).split(".")]
    while segments and segments[-1] == 0:
        segments.pop()
    key = "".join(f"1{n:010d}" for n in segments)
    pre = match.group(2)
    return key + ("00" + "".join(f"{ord(c):03d}" for c in pre) if pre else "01")
