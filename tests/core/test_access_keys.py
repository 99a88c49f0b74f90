"""``core.access.keys``: a revoked admin key is refused; key names are unique."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.access import keys as admin_keys
from core.base.errors import Conflict, InvalidCredentials, NotFound


def test_revoked_admin_key_is_refused_and_names_are_unique(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as db:
        secret, _ = admin_keys.create_admin_key(db, name="ci")
        admin_keys.revoke_admin_key(db, "ci")
    with session_factory() as db:
        with pytest.raises(InvalidCredentials):
            admin_keys.authenticate_admin(db, secret)
        with pytest.raises(Conflict):
            admin_keys.create_admin_key(db, name="ci")
        with pytest.raises(NotFound):
            admin_keys.revoke_admin_key(db, "nobody")
