"""Admin keys and their roles: create, list, revoke, authenticate, record their use.

Secrets are returned once by :func:`create_admin_key` and never stored: only their SHA-256 hashes.
Look-ups go by hash (a unique index), and the stored hash is compared again in constant time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.base import security, validation
from core.base.errors import Conflict, InvalidArgument, InvalidCredentials, NotFound
from core.events.audit import Actor, record
from core.models import ROLES, AdminKey
from core.storage.operations import rowcount
from core.storage.types import utcnow

#: an admin key's ``last_used_at`` is written at most this often (not one write per admin request)
KEY_LAST_USED_RESOLUTION = timedelta(minutes=1)


def key_dict(key: AdminKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "role": key.role,
        "scope": None,  # a selector the key is limited to (the console's people carry one the same way)
        "state": "revoked" if key.revoked_at else "active",
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
        "last_used_at": key.last_used_at,
    }


def role_allows(role: str, needed: str) -> bool:
    """Whether a key with ``role`` may do what needs ``needed`` (roles are ordered: viewer < operator < admin)."""
    return ROLES.index(role) >= ROLES.index(needed)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidArgument(f"role must be one of {', '.join(ROLES)}; got {role!r}", field="role")
    return role


def create_admin_key(
    db: Session, *, name: str, role: str = "admin", actor: Actor | None = None
) -> tuple[str, dict[str, Any]]:
    validation.text(name, "name", max_length=64, required=True)
    check_role(role)
    if not validation.DEVICE_ID_RE.fullmatch(name):
        raise InvalidArgument("a key name uses A-Z a-z 0-9 . _ : - only", field="name")
    if db.execute(select(AdminKey.id).where(AdminKey.name == name)).first() is not None:
        raise Conflict(f"an admin key named {name!r} already exists (names are never reused)")
    secret = security.new_secret(security.ADMIN_PREFIX)
    key = AdminKey(
        id=security.new_public_id("key"),
        name=name,
        key_hash=security.hash_secret(secret),
        role=role,
        created_at=utcnow(),
    )
    db.add(key)
    try:
        db.flush()
    except IntegrityError:
        raise Conflict(f"an admin key named {name!r} already exists") from None
    record(db, actor, "key.create", name, role=role)
    return secret, key_dict(key)


def list_admin_keys(db: Session, *, after: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Oldest first; with ``limit``, pages in name order instead (keyset: ``after`` is the last name)."""
    query = select(AdminKey).order_by(AdminKey.created_at)
    if limit is not None:
        query = select(AdminKey).order_by(AdminKey.name).limit(limit)
        if after is not None:
            query = query.where(AdminKey.name > after)
    return [key_dict(k) for k in db.execute(query).scalars()]


def revoke_admin_key(db: Session, name: str, *, actor: Actor | None = None) -> dict[str, Any]:
    key = db.execute(select(AdminKey).where(AdminKey.name == name)).scalar_one_or_none()
    if key is None:
        raise NotFound(f"no admin key named {name!r}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        db.flush()
        record(db, actor, "key.revoke", name)
    return key_dict(key)


def authenticate_admin(db: Session, secret: str) -> dict[str, Any]:
    """The key a secret belongs to (a read only; the caller records its use, see below)."""
    key = db.execute(select(AdminKey).where(AdminKey.key_hash == security.hash_secret(secret))).scalar_one_or_none()
    if key is None or not security.matches(secret, key.key_hash) or key.revoked_at is not None:
        raise InvalidCredentials("invalid admin key")
    return key_dict(key)


def confirm_admin_key(db: Session | Connection, key_id: str) -> str:
    """In the transaction that writes on a key's behalf: the key still exists and is not revoked; its role.

    The key is checked when a request's headers arrive, but its body may come much later (a slow upload
    landed 3 s after the key was revoked, a campaign 120 s after). Run first in the writing transaction,
    this closes the gap: on PostgreSQL the key's row is share-locked until that transaction ends, so a
    revocation that committed before is seen and one that comes later waits for the write; on SQLite the
    write transaction holds the database's write lock from its first statement.
    """
    row = db.execute(
        select(AdminKey.role, AdminKey.revoked_at).where(AdminKey.id == key_id).with_for_update(read=True)
    ).first()
    if row is None or row.revoked_at is not None:
        raise InvalidCredentials("the admin key was revoked while the request was on its way")
    return str(row.role)


def key_use_is_stale(key: dict[str, Any], now: datetime | None = None) -> bool:
    """Is the recorded last use of a key (from :func:`authenticate_admin`) a minute old or more?"""
    last = key["last_used_at"]
    return last is None or last <= (now or utcnow()) - KEY_LAST_USED_RESOLUTION


def record_admin_key_use(db: Session, key_id: str, now: datetime | None = None) -> bool:
    """Record a key's use, at most once a minute: one conditional UPDATE; returns whether it wrote.

    Callers skip it while :func:`key_use_is_stale` is false, so a busy admin client costs one write a
    minute, not one per request; two requests racing at the minute's turn write once.
    """
    now = now or utcnow()
    stale = now - KEY_LAST_USED_RESOLUTION
    # on PostgreSQL a row another request is recording right now is skipped, not waited for (its
    # transaction may last the whole request); SQLite has no row locks and ignores FOR UPDATE
    target = (
        select(AdminKey.id)
        .where(AdminKey.id == key_id, (AdminKey.last_used_at.is_(None)) | (AdminKey.last_used_at <= stale))
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    written = db.execute(
        update(AdminKey)
        .where(AdminKey.id == target)
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    return rowcount(written) > 0
