"""People in the console: one-time sign-in links, OpenID Connect sign-ins, sessions, roles from claims.

Every secret here (a link's token, an OpenID Connect ``state``, a session cookie) is 32 random bytes,
returned once and stored only as its SHA-256 hash (the unique look-up key), compared again in constant
time. A link and a pending sign-in are used once: a conditional ``UPDATE ... WHERE ended_at IS NULL``
ends them, so of two uses racing one wins. A session's ``expires_at`` is the sooner of its idle end
(moved on by use, at most once a minute) and its absolute end (``created_at`` + the session hours).
A person's role carries an optional scope, a selector (``operator@store=42``), checked with the selector
grammar when it is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Table, and_, or_, select, update
from sqlalchemy.orm import Session

from core.access.keys import check_role
from core.base import security
from core.base.errors import InvalidArgument, InvalidCredentials
from core.base.settings import Settings
from core.devices import scopes
from core.events.audit import Actor, record
from core.models import ROLES, ConsoleSession
from core.storage.batched_delete import batched_cleanup
from core.storage.operations import rowcount
from core.storage.types import utcnow

_TABLE: Table = ConsoleSession.__table__  # type: ignore[assignment]
#: how long a sign-in link and a pending OpenID Connect sign-in stay usable
LINK_MINUTES = 10
#: a session's idle end moves on at most this often (not one write per page)
TOUCH_RESOLUTION = timedelta(minutes=1)
_EMAIL_RE = re.compile(r"^[^\s@<>\"]{1,64}@[^\s@<>\"]{1,189}$")
_ENTRY_RE = re.compile(r"^(?P<claim>[A-Za-z0-9_.-]+):(?P<value>[^=,]+)=(?P<role>[a-z]+)(?:@(?P<scope>.*))?$")


@dataclass(frozen=True)
class Person:
    """Who a console request acts as: the same role check as an admin key (``core.access.keys.role_allows``)."""

    session_id: str
    email: str
    role: str
    scope: str | None = None
    #: the hash of the CSRF token issued with the session: a form is accepted with that token only
    csrf_hash: str | None = None

    @property
    def actor_name(self) -> str:
        return f"user:{self.email}"


@dataclass(frozen=True)
class RoleRule:
    """One entry of ``NEXMDM_OIDC_ROLES``: claim ``claim`` containing ``value`` gives ``role`` (and ``scope``)."""

    claim: str
    value: str
    role: str
    scope: str | None = None


def check_scope(scope: str | None) -> str | None:
    """A person's scope, as a key's (``core.devices.scopes.check_scope``: normalized, narrower than the whole
    fleet, no ``@state``); an empty one is none."""
    if scope is None or not scope.strip():
        return None
    return scopes.check_scope(scope)


def check_email(email: str) -> str:
    email = email.strip()
    if not _EMAIL_RE.fullmatch(email):
        raise InvalidArgument(f"{email[:80]!r} is not an email address", field="email")
    return email


def parse_role(text: str) -> tuple[str, str | None]:
    """``operator`` or ``operator@store=42`` -> (role, scope)."""
    role, _, scope = text.partition("@")
    return check_role(role.strip()), check_scope(scope) if scope else None


def parse_role_rules(text: str) -> list[RoleRule]:
    """``groups:mdm-admins=admin,groups:store-42=operator@store=42,@state=online`` -> rules.

    Entries are separated by commas; a comma inside a scope (a selector of several terms) belongs to the
    scope: a piece that does not start a new ``claim:value=role`` entry continues the previous scope.
    """
    entries: list[str] = []
    for piece in text.split(","):
        if entries and not _ENTRY_RE.fullmatch(piece.strip()) and "@" in entries[-1]:
            entries[-1] += "," + piece
        elif piece.strip():
            entries.append(piece.strip())
    rules = []
    for entry in entries:
        match = _ENTRY_RE.fullmatch(entry)
        if match is None:
            raise InvalidArgument(f"NEXMDM_OIDC_ROLES: {entry!r} is not claim:value=role[@scope]", field="oidc_roles")
        role, scope = parse_role(match["role"] + (f"@{match['scope']}" if match["scope"] else ""))
        rules.append(RoleRule(match["claim"], match["value"].strip(), role, scope))
    return rules


def role_from_claims(rules: list[RoleRule], claims: dict[str, Any]) -> tuple[str, str | None] | None:
    """The highest role the claims earn (an unscoped rule before a scoped one of the same role); None: none."""
    best: RoleRule | None = None
    for rule in rules:
        value = claims.get(rule.claim)
        values = value if isinstance(value, list) else [value]
        if rule.value not in [str(v) for v in values if v is not None]:
            continue
        rank = (ROLES.index(rule.role), rule.scope is None)
        if best is None or rank > (ROLES.index(best.role), best.scope is None):
            best = rule
    return None if best is None else (best.role, best.scope)


def _new(db: Session, kind: str, prefix: str, minutes: float, **values: Any) -> str:
    secret = security.new_secret(prefix)
    now = utcnow()
    db.add(
        ConsoleSession(
            id=security.new_public_id("cs"),
            kind=kind,
            token_hash=security.hash_secret(secret),
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(minutes=minutes),
            **values,
        )
    )
    db.flush()
    return secret


def create_link(
    db: Session, *, role: str, scope: str | None = None, email: str | None = None, actor: Actor | None = None
) -> str:
    """A one-time sign-in link's token (valid :data:`LINK_MINUTES`); the person signs in as ``email``."""
    role, scope = check_role(role), check_scope(scope)
    email = check_email(email) if email else "console-link@localhost"
    secret = _new(db, "link", security.CONSOLE_LINK_PREFIX, LINK_MINUTES, email=email, role=role, scope=scope)
    record(db, actor, "console.link", email, role=role, scope=scope)
    return secret


def _take(db: Session, kind: str, secret: str) -> ConsoleSession:
    """Use a link or a pending sign-in once: ended by a conditional UPDATE, so a second use finds nothing."""
    token_hash = security.hash_secret(secret)
    now = utcnow()
    taken = db.execute(
        update(_TABLE)
        .where(
            _TABLE.c.token_hash == token_hash,
            _TABLE.c.kind == kind,
            _TABLE.c.ended_at.is_(None),
            _TABLE.c.expires_at > now,
        )
        .values(ended_at=now)
    )
    row = db.execute(select(ConsoleSession).where(ConsoleSession.token_hash == token_hash)).scalar_one_or_none()
    if rowcount(taken) != 1 or row is None or not security.matches(secret, row.token_hash):
        what = "sign-in link" if kind == "link" else "sign-in"
        raise InvalidCredentials(f"this {what} is unknown, used or expired; ask for a new one")
    return row


def begin_oidc(db: Session, *, code_verifier: str, nonce: str, browser: str, next_page: str | None = None) -> str:
    """A pending OpenID Connect sign-in: its ``state`` (a secret), keeping the PKCE verifier, the nonce, the
    console page to go back to and the hash of ``browser``, a secret the browser that began it holds in a
    cookie (so that the provider's answer is taken only from that browser)."""
    data = {
        "code_verifier": code_verifier,
        "nonce": nonce,
        "next_page": next_page,
        "browser": security.hash_secret(browser),
    }
    return _new(db, "oidc", security.CONSOLE_LINK_PREFIX, LINK_MINUTES, data=data)


def take_oidc(db: Session, state: str, browser: str) -> dict[str, Any]:
    """The verifier and nonce of a pending sign-in, used once, and only by the browser that began it: a
    callback URL replayed elsewhere (or forced on a victim's browser, to sign them in as someone else) is
    refused."""
    data = dict(_take(db, "oidc", state).data or {})
    if not security.matches(browser, data.get("browser")):
        raise InvalidCredentials("this sign-in began in another browser; sign in again from this one")
    return data


def start_session(
    db: Session,
    settings: Settings,
    *,
    email: str,
    role: str,
    scope: str | None,
    address: str | None,
    how: str,
    csrf_token: str | None = None,
) -> tuple[str, Person]:
    """A new session's cookie value and who it is; audited as ``console.sign_in``. ``csrf_token``: the CSRF
    token issued with it (its hash is kept: the console accepts a form of this session with it only)."""
    email, role, scope = check_email(email), check_role(role), check_scope(scope)
    minutes = min(settings.console_idle_minutes, settings.console_session_hours * 60)
    csrf_hash = security.hash_secret(csrf_token) if csrf_token else None
    data = {"csrf": csrf_hash} if csrf_hash else None
    secret = _new(
        db, "session", security.CONSOLE_SESSION_PREFIX, minutes, email=email, role=role, scope=scope, data=data
    )
    row = db.execute(select(ConsoleSession.id).where(ConsoleSession.token_hash == security.hash_secret(secret)))
    person = Person(row.scalar_one(), email, role, scope, csrf_hash)
    record(db, Actor(person.actor_name, address), "console.sign_in", email, role=role, scope=scope, via=how)
    return secret, person


def redeem_link(
    db: Session, settings: Settings, secret: str, *, address: str | None, csrf_token: str | None = None
) -> tuple[str, Person]:
    """Sign in with a one-time link: the link ends, a session starts."""
    link = _take(db, "link", secret)
    return start_session(
        db,
        settings,
        email=str(link.email),
        role=str(link.role),
        scope=link.scope,
        address=address,
        how="link",
        csrf_token=csrf_token,
    )


def authenticate_session(db: Session, secret: str) -> tuple[Person, bool]:
    """The person a session cookie belongs to (a read only), and whether its idle end is due to move on
    (:func:`touch_session`, at most once a minute)."""
    row = db.execute(
        select(ConsoleSession).where(
            ConsoleSession.token_hash == security.hash_secret(secret), ConsoleSession.kind == "session"
        )
    ).scalar_one_or_none()
    now = utcnow()
    if row is None or not security.matches(secret, row.token_hash) or row.ended_at is not None or row.expires_at <= now:
        raise InvalidCredentials("the console session ended; sign in again")
    person = Person(row.id, str(row.email), str(row.role), row.scope, (row.data or {}).get("csrf"))
    return person, now - row.last_seen_at >= TOUCH_RESOLUTION


def touch_session(db: Session, settings: Settings, session_id: str) -> None:
    """Move a session's idle end on, never past its absolute end."""
    row = db.get(ConsoleSession, session_id)
    if row is None or row.ended_at is not None:
        return
    now = utcnow()
    row.last_seen_at = now
    row.expires_at = min(
        row.created_at + timedelta(hours=settings.console_session_hours),
        now + timedelta(minutes=settings.console_idle_minutes),
    )
    db.flush()


def end_session(db: Session, person: Person, *, address: str | None) -> None:
    """Sign out: the session's cookie stops working at once, wherever it was copied to."""
    db.execute(
        update(_TABLE).where(_TABLE.c.id == person.session_id, _TABLE.c.ended_at.is_(None)).values(ended_at=utcnow())
    )
    record(db, Actor(person.actor_name, address), "console.sign_out", person.email)


def cleanup_old_console_sessions(
    db: Session, *, retention_days: int | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Delete links, pending sign-ins and sessions that ended (or expired) before the cutoff."""
    return batched_cleanup(
        db,
        entity="console_sessions",
        table=_TABLE,
        keys=(_TABLE.c.id,),
        condition=lambda cutoff: or_(_TABLE.c.expires_at < cutoff, and_(_TABLE.c.ended_at < cutoff)),
        retention_days=retention_days,
        dry_run=dry_run,
    )
