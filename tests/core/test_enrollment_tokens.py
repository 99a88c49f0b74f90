"""``core.enrollment.tokens``: enrollment secrets (beside an admin key's) are long, random and stored as hashes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.access import keys as admin_keys
from core.base import security
from core.base.errors import InvalidArgument, InvalidCredentials
from core.enrollment import tokens as credentials
from core.models import AdminKey, EnrollmentToken


def test_secrets_are_long_random_and_stored_as_hashes(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as db:
        secret, token = credentials.create_enrollment_token(db)
        key_secret, key = admin_keys.create_admin_key(db, name="ops")
    assert secret.startswith("nxe_") and len(secret) >= 4 + 43
    assert key_secret.startswith("nxa_") and key_secret != secret
    with session_factory() as db:
        stored = db.get(EnrollmentToken, token["id"])
        assert stored.token_hash == security.hash_secret(secret)
        assert secret not in repr(credentials.list_enrollment_tokens(db))
        assert db.execute(select(AdminKey.key_hash)).scalar_one() == security.hash_secret(key_secret)
        assert admin_keys.authenticate_admin(db, key_secret)["name"] == "ops"
        with pytest.raises(InvalidCredentials):
            admin_keys.authenticate_admin(db, key_secret + "x")


@pytest.mark.parametrize("kwargs", [{"uses": 0}, {"uses": True}, {"expires_in": timedelta(0)}])
def test_bad_token_options(db: Session, kwargs: dict) -> None:
    with pytest.raises(InvalidArgument):
        credentials.create_enrollment_token(db, **kwargs)
