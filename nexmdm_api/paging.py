"""Keyset pages, the one shape of every admin listing: ``{items, next_cursor}``, a ``limit`` of 1–500, and
the cursor the last row's sort key (null on the last page)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from litestar.params import Parameter

#: the ``limit`` query parameter of a listing (each route gives its own default)
Limit = Annotated[int, Parameter(ge=1, le=500, description="page size")]

Row = dict[str, Any]


def keyset_page(
    fetch: Callable[[int], list[Row]], limit: int, cursor_of: str | Callable[[Row], str]
) -> tuple[list[Row], str | None]:
    """One page: ``fetch(n)`` returns up to ``n`` rows after the cursor, in the listing's order; one more
    than ``limit`` is asked for, to know whether a next page exists without counting.

    Returns the page's rows and the next cursor: the last row's ``cursor_of`` field as a string (or
    ``cursor_of(row)`` when it is a function), None when this is the last page.
    """
    rows = fetch(limit + 1)
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, str(last[cursor_of]) if isinstance(cursor_of, str) else cursor_of(last)
