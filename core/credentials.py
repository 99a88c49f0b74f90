"""Enrollment tokens and admin keys: create, list, revoke, authenticate.

Secrets are returned once by the ``create_*`` functions and never stored: only their SHA-256 hashes.
Look-ups go by hash (a unique index), and the stored hash is compared again in constant time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import security, validation
from core.errors import Conflict, InvalidArgument, InvalidCredentials, NotFound
from core.events.audit import Actor, record
from core.models import ROLES, AdminKey, EnrollmentToken
from core.operations import rowcount
from core.types import utcnow

MAX_TOKEN_USES = 1_000_000
MAX_TOKEN_LIFETIME = timedelta(days=365)
#: an admin key's ``last_used_at`` is written at most this often (not one write per admin request)
KEY_LAST_USED_RESOLUTION = timedelta(minutes=1)


def token_state(token: EnrollmentToken, now: datetime | None = None) -> str:
    """``active``, ``revoked``, ``expired`` or ``exhausted``."""
    now = now or utcnow()
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at <= now:
        return "expired"
    if token.uses >= token.max_uses:
        return "exhausted"
    return "active"


def token_dict(token: EnrollmentToken, now: datetime | None = None) -> dict[str, Any]:
    return {
        "id": token.id,
        "state": token_state(token, now),
        "uses": token.uses,
        "max_uses": token.max_uses,
        "note": token.note,
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "revoked_at": token.revoked_at,
        "last_used_at": token.last_used_at,
        "labels": dict(token.labels or {}),
    }


def create_enrollment_token(
    db: Session,
    *,
    uses: int = 1,
    expires_in: timedelta = timedelta(hours=1),
    note: str | None = None,
    labels: dict[str, str] | None = None,
    actor: Actor | None = None,
) -> tuple[str, dict[str, Any]]:
    """Create a token; returns ``(secret, token)``. The secret is shown once and not stored.

    Every device enrolled with it starts with ``labels``.
    """
    from core.fleet.labels import validate_labels

    labels = validate_labels(labels)
    if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= MAX_TOKEN_USES:
        raise InvalidArgument(f"uses must be between 1 and {MAX_TOKEN_USES}", field="uses")
    if expires_in <= timedelta(0) or expires_in > MAX_TOKEN_LIFETIME:
        raise InvalidArgument("a token must expire within 365 days", field="expires")
    validation.text(note, "note", max_length=200)
    secret = security.new_secret(security.ENROLLMENT_PREFIX)
    now = utcnow()
    token = EnrollmentToken(
        id=security.new_public_id("enr"),
        token_hash=security.hash_secret(secret),
        max_uses=uses,
        uses=0,
        note=note,
        labels=labels or None,
        created_at=now,
        expires_at=now + expires_in,
    )
    db.add(token)
    db.flush()
    record(
        db, actor, "token.create", token.id, uses=uses, expires_at=token.expires_at.isoformat(), labels=labels or None
    )
    return secret, token_dict(token, now)


def list_enrollment_tokens(
    db: Session, *, include_inactive: bool = True, after: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Newest first; with ``limit``, pages in id order instead (keyset: ``after`` is the last id)."""
    now = utcnow()
    query = select(EnrollmentToken).order_by(EnrollmentToken.created_at.desc())
    if limit is not None:
        query = select(EnrollmentToken).order_by(EnrollmentToken.id).limit(limit)
        if after is not None:
            query = query.where(EnrollmentToken.id > after)
    rows = [token_dict(t, now) for t in db.execute(query).scalars()]
    return rows if include_inactive else [r for r in rows if r["state"] == "active"]


def revoke_enrollment_token(db: Session, token_id: str, *, actor: Actor | None = None) -> dict[str, Any]:
    token = db.get(EnrollmentToken, token_id)
    if token is None:
        raise NotFound(f"no enrollment token {token_id!r}")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        db.flush()
        record(db, actor, "token.revoke", token.id)
    return token_dict(token)


def find_enrollment_token(db: Session, secret: str) -> EnrollmentToken:
    """The token a secret belongs to, whatever its state; ``InvalidCredentials`` when unknown."""
    token_hash = security.hash_secret(secret)
    token = db.execute(select(EnrollmentToken).where(EnrollmentToken.token_hash == token_hash)).scalar_one_or_none()
    if token is None or not security.matches(secret, token.token_hash):
        raise InvalidCredentials("unknown enrollment token")
    return token


def consume_enrollment_use(db: Session, token: EnrollmentToken) -> None:
    """Take one use of a token atomically: one conditional UPDATE, so parallel callers cannot overdraw."""
    now = utcnow()
    taken = db.execute(
        update(EnrollmentToken)
        .where(
            EnrollmentToken.id == token.id,
            EnrollmentToken.revoked_at.is_(None),
            EnrollmentToken.expires_at > now,
            EnrollmentToken.uses < EnrollmentToken.max_uses,
        )
        .values(uses=EnrollmentToken.uses + 1, last_used_at=now)
        .returning(EnrollmentToken.id)
        .execution_options(synchronize_session=False)
    ).first()
    if taken is None:
        db.refresh(token)
        raise InvalidCredentials(f"enrollment token is {token_state(token, now)}")


def check_enrollment_token_usable(token: EnrollmentToken) -> None:
    """For requests that use a token without consuming it (APK downloads)."""
    state = token_state(token)
    if state not in ("active", "exhausted"):
        raise InvalidCredentials(f"enrollment token is {state}")


# ------------------------------------------------------------------------------------ admin keys


def key_dict(key: AdminKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "role": key.role,
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
