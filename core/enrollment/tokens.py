"""Enrollment tokens: create, list, revoke, find by secret and consume a use.

Secrets are returned once by the ``create_*`` functions and never stored: only their SHA-256 hashes.
Look-ups go by hash (a unique index), and the stored hash is compared again in constant time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.base import security, validation
from core.base.errors import InvalidArgument, InvalidCredentials, NotFound
from core.base.labels import validate_labels
from core.events.audit import Actor, record
from core.models import EnrollmentToken
from core.storage.types import utcnow

MAX_TOKEN_USES = 1_000_000
MAX_TOKEN_LIFETIME = timedelta(days=365)


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
