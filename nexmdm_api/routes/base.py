"""What every resource's controller shares: its handlers run in a worker thread unless they are ``async``.

Each module under ``routes/`` declares one Litestar ``Controller`` per resource (its path and tags, once)
and its handlers with the decorators below. Litestar's ``Controller`` has no ``sync_to_thread`` of its
own, so these are Litestar's decorators with ``sync_to_thread=True`` given once: our handlers are
synchronous (SQLAlchemy sessions) and must not block the event loop. An ``async`` handler (the APK
upload, PostgreSQL's heartbeat, ``/healthz``) uses Litestar's own decorator instead.
"""

from __future__ import annotations

from functools import partial

import litestar

get = partial(litestar.get, sync_to_thread=True)
post = partial(litestar.post, sync_to_thread=True)
patch = partial(litestar.patch, sync_to_thread=True)
put = partial(litestar.put, sync_to_thread=True)
delete = partial(litestar.delete, sync_to_thread=True)

__all__ = ["delete", "get", "patch", "post", "put"]
